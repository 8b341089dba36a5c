using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>y = x W^T + b, with the parameter names of <c>torch.nn.Linear</c> (<c>weight</c>, <c>bias</c>).</summary>
internal sealed class Linear : nn.Module<Tensor, Tensor>, IInitializable, Lora.IAdaptableLayer
{
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public Linear(long inFeatures, long outFeatures, bool hasBias, TensorSpec spec) : base(nameof(Linear))
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        weight = spec.NewParameter(outFeatures, inFeatures);
        bias = hasBias ? spec.NewParameter(outFeatures) : null;
        RegisterComponents();
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    public Parameter Weight => weight;

    public Parameter? Bias => bias;

    /// <summary>LoRA and other adapters that add to this layer's output.</summary>
    public Lora.AdapterSlot Adapters { get; } = new();

    long Lora.IAdaptableLayer.InChannels => InFeatures;

    long Lora.IAdaptableLayer.OutChannels => OutFeatures;

    long Lora.IAdaptableLayer.KernelSize => 1;

    bool Lora.IAdaptableLayer.IsConvolution => false;

    long Lora.IAdaptableLayer.Stride => 1;

    long Lora.IAdaptableLayer.Padding => 0;

    public override Tensor forward(Tensor input)
    {
        var output = nn.functional.linear(input, weight, bias);
        return Adapters.IsEmpty ? output : Adapters.Apply(input, output);
    }

    public void Initialize(Generator generator) => PyTorchInit.KaimingUniformWithBias(weight, bias, InFeatures, generator);
}
