using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.AttentionProcessors;

/// <summary>
/// diffusers' <c>LoRALinearLayer</c>: <c>down</c> (rank x in) then <c>up</c> (out x rank), no biases; the result is
/// multiplied by alpha / rank. Computed in the layer's own dtype (fp32 master weights under a half-precision model)
/// and returned in the input's dtype. Optional dropout on the input, as PEFT applies it.
/// </summary>
internal sealed class LoraLinearLayer : nn.Module
{
    private readonly Linear down;
    private readonly Linear up;

    public LoraLinearLayer(long inFeatures, long outFeatures, int rank, double alpha, double dropout, TensorSpec spec) : base("LoRALinearLayer")
    {
        if (rank < 1)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, "the LoRA rank must be at least 1");
        Rank = rank;
        Alpha = alpha;
        Dropout = dropout;
        down = new Linear(inFeatures, rank, hasBias: false, spec);
        up = new Linear(rank, outFeatures, hasBias: false, spec);
        RegisterComponents();
    }

    public int Rank { get; }

    public double Alpha { get; }

    public double Dropout { get; }

    public double Scale => Alpha / Rank;

    public Linear Down => down;

    public Linear Up => up;

    /// <summary>The seed's initialisation: down ~ N(0, 1/rank), up = 0 (so a new adapter changes nothing).</summary>
    public void InitializeAsSeed(Generator generator)
    {
        using var noGrad = no_grad();
        using var values = normal(0, 1.0 / Rank, down.Weight.shape, float32, CPU, generator: generator);
        down.Weight.copy_(values);
        up.Weight.zero_();
    }

    public Tensor Forward(Tensor input)
    {
        var dtype = down.Weight.dtype;
        var x = input.to(dtype);
        if (Dropout > 0 && training)
            x = nn.functional.dropout(x, Dropout, training);
        var result = up.forward(down.forward(x));
        if (Scale != 1.0)
            result = result.Times(Scale);
        return result.to(input.dtype);
    }

    /// <summary>The dense weight change scale * (alpha/rank) * up @ down, in float32.</summary>
    public Tensor DeltaWeight(double scale) => up.Weight.to(float32).matmul(down.Weight.to(float32)).Times(Scale * scale);
}
