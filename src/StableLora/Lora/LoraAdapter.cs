using StableLora.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Lora;

/// <summary>How a new LoRA adapter's weights start.</summary>
internal enum LoraInitialization
{
    /// <summary>diffusers 0.21's LoRALinearLayer: down ~ N(0, 1/rank), up = 0.</summary>
    Seed,

    /// <summary>kohya's: down Kaiming-uniform as <c>nn.Linear</c>/<c>nn.Conv2d</c> initialise (bound 1/sqrt(fan_in)), up = 0.</summary>
    Kohya,
}

/// <summary>The shape and training behaviour of one LoRA adapter.</summary>
/// <param name="Rank">Inner dimension r.</param>
/// <param name="Alpha">Scale numerator: the adapter adds alpha / r x up(down(x)).</param>
/// <param name="InputDropout">Dropout on the adapter's input while training (PEFT's <c>lora_dropout</c>).</param>
/// <param name="NetworkDropout">Dropout on the down projection's output while training (kohya's <c>network_dropout</c>).</param>
/// <param name="RankDropout">Drops whole ranks per sample while training, scaling the rest by 1/(1-p) (kohya's <c>rank_dropout</c>).</param>
/// <param name="ModuleDropout">Skips the whole adapter for a forward call with this probability while training (kohya's <c>module_dropout</c>).</param>
internal sealed record LoraAdapterSettings(int Rank, double Alpha, double InputDropout = 0, double NetworkDropout = 0, double RankDropout = 0, double ModuleDropout = 0)
{
    public bool HasDropout => InputDropout > 0 || NetworkDropout > 0 || RankDropout > 0 || ModuleDropout > 0;
}

/// <summary>
/// A trainable LoRA on one Linear or Conv2d (kohya's <c>LoRAModule</c>, diffusers' <c>LoRALinearLayer</c>): <c>lora_down</c>
/// (a Linear to r, or a convolution to r with the base layer's kernel, stride and padding) then <c>lora_up</c> (a Linear
/// from r, or a 1x1 convolution), no biases, times alpha / r and the multiplier. It computes in its own dtype (fp32 master
/// weights under a half-precision model) and returns the input's dtype.
/// </summary>
internal sealed class LoraAdapter : nn.Module, IWeightAdapter
{
    private readonly nn.Module<Tensor, Tensor> lora_down;
    private readonly nn.Module<Tensor, Tensor> lora_up;

    public LoraAdapter(IAdaptableLayer target, LoraAdapterSettings settings, TensorSpec spec) : base("LoRAModule")
    {
        if (settings.Rank < 1)
            throw new ArgumentOutOfRangeException(nameof(settings), settings.Rank, "the LoRA rank must be at least 1");
        Settings = settings;
        IsConvolution = target.IsConvolution;
        KernelSize = target.KernelSize;
        if (target.IsConvolution)
        {
            lora_down = new Layers.Conv2d(target.InChannels, settings.Rank, target.KernelSize, spec, target.Stride, target.Padding, hasBias: false);
            lora_up = new Layers.Conv2d(settings.Rank, target.OutChannels, 1, spec, hasBias: false);
        }
        else
        {
            lora_down = new Layers.Linear(target.InChannels, settings.Rank, hasBias: false, spec);
            lora_up = new Layers.Linear(settings.Rank, target.OutChannels, hasBias: false, spec);
        }

        RegisterComponents();
    }

    public LoraAdapterSettings Settings { get; }

    public int Rank => Settings.Rank;

    public double Alpha => Settings.Alpha;

    public double Scale => Settings.Alpha / Settings.Rank;

    public bool IsConvolution { get; }

    public long KernelSize { get; }

    public double Multiplier { get; set; } = 1.0;

    /// <summary>[r, in] or [r, in, k, k].</summary>
    public Parameter Down => lora_down is Layers.Linear linear ? linear.Weight : ((Layers.Conv2d)lora_down).Weight;

    /// <summary>[out, r] or [out, r, 1, 1].</summary>
    public Parameter Up => lora_up is Layers.Linear linear ? linear.Weight : ((Layers.Conv2d)lora_up).Weight;

    public IEnumerable<Parameter> TrainableParameters => new[] { Down, Up };

    public void Initialize(LoraInitialization initialization, Generator generator)
    {
        using var noGrad = no_grad();
        if (initialization == LoraInitialization.Seed)
        {
            using var values = normal(0, 1.0 / Rank, Down.shape, float32, CPU, generator: generator);
            Down.copy_(values);
        }
        else
        {
            ((IInitializable)lora_down).Initialize(generator);
        }

        Up.zero_();
    }

    public Tensor? Forward(Tensor input)
    {
        if (Multiplier == 0)
            return null;
        var settings = Settings;
        if (training && settings.ModuleDropout > 0 && rand(1).item<float>() < settings.ModuleDropout)
            return null;

        var x = input.to(Down.dtype);
        if (training && settings.InputDropout > 0)
            x = nn.functional.dropout(x, settings.InputDropout, training);
        var hidden = lora_down.forward(x);
        if (training && settings.NetworkDropout > 0)
            hidden = nn.functional.dropout(hidden, settings.NetworkDropout, training);
        double scale = Scale;
        if (training && settings.RankDropout > 0)
        {
            using var mask = RankMask(hidden, settings.RankDropout);
            hidden = hidden * mask;
            scale /= 1 - settings.RankDropout;
        }

        var result = lora_up.forward(hidden);
        if (scale != 1.0)
            result = result.Times(scale);
        result = result.to(input.dtype);
        return Multiplier == 1.0 ? result : result.Times(Multiplier);
    }

    /// <summary>The dense weight change multiplier x alpha/r x up @ down, in float64, shaped like the base weight.</summary>
    public Tensor DeltaWeight(double multiplier, long[] weightShape)
    {
        using var scope = NewDisposeScope();
        var up = Up.detach().to(float64).reshape(Up.shape[0], Rank);
        var down = Down.detach().to(float64).reshape(Rank, -1);
        return up.matmul(down).Times(Scale * multiplier).reshape(weightShape).MoveToOuterDisposeScope();
    }

    /// <summary>A [B, r] keep-mask (as [B, 1, r] for token inputs, [B, r, 1, 1] for feature maps), kept where U(0,1) > p.</summary>
    private static Tensor RankMask(Tensor hidden, double probability)
    {
        using var scope = NewDisposeScope();
        long batch = hidden.shape[0];
        long rank = IsChannelsFirst(hidden) ? hidden.shape[1] : hidden.shape[^1];
        using var threshold = probability.ToScalar();
        var mask = rand(new[] { batch, rank }, hidden.dtype, hidden.device).gt(threshold).to(hidden.dtype);
        mask = hidden.dim() switch
        {
            2 => mask,
            3 => mask.unsqueeze(1),
            _ => mask.view(batch, rank, 1, 1),
        };
        return mask.MoveToOuterDisposeScope();

        static bool IsChannelsFirst(Tensor t) => t.dim() == 4;
    }
}
