using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>A lookup table of <c>weight</c> rows, as <c>torch.nn.Embedding</c>.</summary>
internal sealed class Embedding : nn.Module<Tensor, Tensor>, IInitializable
{
    private readonly Parameter weight;

    public Embedding(long count, long dimension, TensorSpec spec) : base(nameof(Embedding))
    {
        Count = count;
        weight = spec.NewParameter(count, dimension);
        RegisterComponents();
    }

    public long Count { get; }

    public Parameter Weight => weight;

    public override Tensor forward(Tensor ids) => weight.index_select(0, ids.flatten()).reshape(ids.shape.Append(weight.shape[1]).ToArray());

    public void Initialize(Generator generator)
    {
        using var noGrad = no_grad();
        using var values = randn(weight.shape, float32, CPU, generator: generator);
        weight.copy_(values);
    }
}
