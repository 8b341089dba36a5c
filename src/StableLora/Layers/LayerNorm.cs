using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>Layer normalisation over the last dimension with <c>weight</c> and <c>bias</c>, as <c>torch.nn.LayerNorm</c>.</summary>
internal sealed class LayerNorm : nn.Module<Tensor, Tensor>, IInitializable
{
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly long[] _shape;

    public LayerNorm(long features, double eps, TensorSpec spec) : base(nameof(LayerNorm))
    {
        Eps = eps;
        _shape = new[] { features };
        weight = spec.NewParameter(features);
        bias = spec.NewParameter(features);
        RegisterComponents();
    }

    public double Eps { get; }

    public override Tensor forward(Tensor input) => nn.functional.layer_norm(input, _shape, weight, bias, Eps);

    public void Initialize(Generator generator) => PyTorchInit.OnesAndZeros(weight, bias);
}
