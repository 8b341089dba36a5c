using StableLora.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.AttentionProcessors;

/// <summary>
/// diffusers' <c>Attention</c>: owns the projections (<c>to_q</c>, <c>to_k</c>, <c>to_v</c>, <c>to_out.0</c>, and for
/// the VAE a <c>group_norm</c>) and delegates the computation to a replaceable <see cref="IAttentionProcessor"/>.
/// The processor is not a registered submodule, so the module's state dict holds only the base weights.
/// </summary>
internal sealed class Attention : nn.Module
{
    // Field order is state-dict order (diffusers registers group_norm first).
    private readonly GroupNorm? group_norm;
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly TorchSharp.Modules.ModuleList<Linear> to_out;

    public Attention(AttentionShape shape, TensorSpec spec) : base(nameof(Attention))
    {
        Shape = shape;
        long inner = shape.Heads * shape.HeadDim;
        group_norm = shape.NormGroups is { } groups ? new GroupNorm(groups, shape.QueryDim, shape.NormEps, spec) : null;
        to_q = new Linear(shape.QueryDim, inner, shape.ProjectionBias, spec);
        to_k = new Linear(shape.ContextDim, inner, shape.ProjectionBias, spec);
        to_v = new Linear(shape.ContextDim, inner, shape.ProjectionBias, spec);
        to_out = new TorchSharp.Modules.ModuleList<Linear>(new Linear(inner, shape.QueryDim, hasBias: true, spec));
        RegisterComponents();
        Processor = SdpaAttnProcessor.Instance;
    }

    public AttentionShape Shape { get; }

    /// <summary>How attention is computed.</summary>
    public IAttentionProcessor Processor { get; set; }

    /// <summary>When set, attention is computed over this many (batch x head) slices at a time to save memory.</summary>
    public int? SliceSize { get; set; }

    public Linear ToQ => to_q;

    public Linear ToK => to_k;

    public Linear ToV => to_v;

    public Linear ToOut => to_out[0];

    public GroupNorm? GroupNorm => group_norm;

    public Tensor Forward(Tensor hiddenStates, Tensor? encoderHiddenStates = null, AttentionOptions? options = null)
    {
        // Whatever the processor creates is released on return; autograd keeps what it saved.
        using var scope = NewDisposeScope();
        return Processor.Process(this, hiddenStates, encoderHiddenStates, options ?? AttentionOptions.Default).MoveToOuterDisposeScope();
    }
}

/// <summary>The dimensions and flags of one <see cref="Attention"/>.</summary>
/// <param name="QueryDim">Channels of the input (and output).</param>
/// <param name="ContextDim">Channels of the key/value input (= QueryDim for self-attention).</param>
/// <param name="Heads">Number of heads.</param>
/// <param name="HeadDim">Channels per head.</param>
/// <param name="ProjectionBias">Whether to_q/to_k/to_v have biases (false in the UNet, true in the VAE).</param>
/// <param name="UpcastAttention">Compute the attention in float32 for half-precision inputs (SD 2.x configs).</param>
/// <param name="NormGroups">Group norm applied to the input first (VAE mid-block attention), or null.</param>
/// <param name="NormEps">Epsilon of that group norm.</param>
/// <param name="ResidualConnection">Add the input to the output (VAE mid-block attention).</param>
/// <param name="RescaleOutputFactor">The output is divided by this.</param>
internal sealed record AttentionShape(
    long QueryDim,
    long ContextDim,
    long Heads,
    long HeadDim,
    bool ProjectionBias,
    bool UpcastAttention = false,
    long? NormGroups = null,
    double NormEps = 1e-5,
    bool ResidualConnection = false,
    double RescaleOutputFactor = 1.0)
{
    public bool IsSelfAttention => ContextDim == QueryDim;
}

/// <summary>Per-call settings of the attention processors (diffusers' <c>cross_attention_kwargs</c>).</summary>
/// <param name="GradientCheckpointing">Whether the UNet's blocks run checkpointed (set by the UNet in training).</param>
internal sealed record AttentionOptions(bool GradientCheckpointing = false)
{
    public static AttentionOptions Default { get; } = new();
}
