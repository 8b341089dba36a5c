using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>A 2-D convolution with the parameter names of <c>torch.nn.Conv2d</c>.</summary>
internal sealed class Conv2d : nn.Module<Tensor, Tensor>, IInitializable, Lora.IAdaptableLayer
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private readonly long[] _stride;
    private readonly long[] _padding;

    public Conv2d(long inChannels, long outChannels, long kernelSize, TensorSpec spec, long stride = 1, long padding = 0, bool hasBias = true)
        : base(nameof(Conv2d))
    {
        InChannels = inChannels;
        OutChannels = outChannels;
        KernelSize = kernelSize;
        _stride = new[] { stride, stride };
        _padding = new[] { padding, padding };
        weight = spec.NewParameter(outChannels, inChannels, kernelSize, kernelSize);
        bias = hasBias ? spec.NewParameter(outChannels) : null;
        RegisterComponents();
    }

    public long InChannels { get; }

    public long OutChannels { get; }

    public long KernelSize { get; }

    public Parameter Weight => weight;

    public Parameter? Bias => bias;

    public long Stride => _stride[0];

    public long Padding => _padding[0];

    /// <summary>LoRA and other adapters that add to this layer's output.</summary>
    public Lora.AdapterSlot Adapters { get; } = new();

    bool Lora.IAdaptableLayer.IsConvolution => true;

    /// <summary>See <see cref="CpuConvolution.SmallMapPixels"/>.</summary>
    public const long SmallMapPixels = CpuConvolution.SmallMapPixels;

    public override Tensor forward(Tensor input)
    {
        var output = CpuConvolution.Forward(input, weight, bias, _stride[0], _padding[0]);
        return Adapters.IsEmpty ? output : Adapters.Apply(input, output);
    }

    public void Initialize(Generator generator) =>
        PyTorchInit.KaimingUniformWithBias(weight, bias, InChannels * KernelSize * KernelSize, generator);
}
