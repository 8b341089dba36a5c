using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>Group normalisation with an affine transform (<c>weight</c>, <c>bias</c>), as <c>torch.nn.GroupNorm</c>.</summary>
internal sealed class GroupNorm : nn.Module<Tensor, Tensor>, IInitializable
{
    private readonly Parameter weight;
    private readonly Parameter bias;

    public GroupNorm(long numGroups, long numChannels, double eps, TensorSpec spec) : base(nameof(GroupNorm))
    {
        if (numGroups <= 0 || numChannels % numGroups != 0)
            throw new ArgumentException($"{numChannels} channels cannot be split into {numGroups} groups");
        NumGroups = numGroups;
        Eps = eps;
        weight = spec.NewParameter(numChannels);
        bias = spec.NewParameter(numChannels);
        RegisterComponents();
    }

    public long NumGroups { get; }

    public double Eps { get; }

    public Parameter Weight => weight;

    public Parameter Bias => bias;

    public override Tensor forward(Tensor input) => nn.functional.group_norm(input, NumGroups, weight, bias, Eps);

    public void Initialize(Generator generator) => PyTorchInit.OnesAndZeros(weight, bias);
}
