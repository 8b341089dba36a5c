using StableLora.AttentionProcessors;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Unet;

/// <summary>
/// diffusers' <c>Transformer2DModel</c> for continuous inputs: GroupNorm, <c>proj_in</c> (a 1x1 conv before flattening,
/// or a Linear after it with <c>use_linear_projection</c>), the <c>transformer_blocks</c>, <c>proj_out</c>, and the residual.
/// </summary>
internal sealed class Transformer2DModel : nn.Module
{
    private readonly GroupNorm norm;
    private readonly nn.Module<Tensor, Tensor> proj_in;
    private readonly TorchSharp.Modules.ModuleList<BasicTransformerBlock> transformer_blocks;
    private readonly nn.Module<Tensor, Tensor> proj_out;
    private readonly bool _linearProjection;

    public Transformer2DModel(TransformerSettings settings, long channels, long heads, int layers, TensorSpec spec) : base(nameof(Transformer2DModel))
    {
        long headDim = channels / heads;
        norm = new GroupNorm(settings.NormGroups, channels, 1e-6, spec);
        _linearProjection = settings.UseLinearProjection;
        proj_in = _linearProjection ? new Linear(channels, channels, hasBias: true, spec) : new Conv2d(channels, channels, 1, spec);
        transformer_blocks = new TorchSharp.Modules.ModuleList<BasicTransformerBlock>(
            Enumerable.Range(0, layers).Select(_ => new BasicTransformerBlock(settings, channels, heads, headDim, spec)).ToArray());
        proj_out = _linearProjection ? new Linear(channels, channels, hasBias: true, spec) : new Conv2d(channels, channels, 1, spec);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates, Tensor encoderHiddenStates, AttentionOptions options)
    {
        // Temporaries are released on return; autograd keeps what it saved (as ResnetBlock2D and Attention do).
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0], channels = hiddenStates.shape[1], height = hiddenStates.shape[2], width = hiddenStates.shape[3];
        var residual = hiddenStates;
        var hidden = norm.forward(hiddenStates);
        if (_linearProjection)
            hidden = proj_in.forward(ToTokens(hidden, batch, channels, height, width));
        else
            hidden = ToTokens(proj_in.forward(hidden), batch, channels, height, width);

        foreach (var block in transformer_blocks)
            hidden = block.Forward(hidden, encoderHiddenStates, options);

        if (_linearProjection)
            hidden = ToMap(proj_out.forward(hidden), batch, channels, height, width);
        else
            hidden = proj_out.forward(ToMap(hidden, batch, channels, height, width));
        return hidden.Plus(residual).MoveToOuterDisposeScope();
    }

    private static Tensor ToTokens(Tensor map, long batch, long channels, long height, long width) =>
        map.permute(0, 2, 3, 1).reshape(batch, height * width, channels);

    private static Tensor ToMap(Tensor tokens, long batch, long channels, long height, long width) =>
        tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2).contiguous();
}

/// <summary>diffusers' <c>BasicTransformerBlock</c>: self-attention, cross-attention and a GEGLU feed-forward, each pre-normed with a residual.</summary>
internal sealed class BasicTransformerBlock : nn.Module
{
    private readonly LayerNorm norm1;
    private readonly Attention attn1;
    private readonly LayerNorm norm2;
    private readonly Attention attn2;
    private readonly LayerNorm norm3;
    private readonly FeedForward ff;

    public BasicTransformerBlock(TransformerSettings settings, long dim, long heads, long headDim, TensorSpec spec) : base(nameof(BasicTransformerBlock))
    {
        norm1 = new LayerNorm(dim, 1e-5, spec);
        attn1 = new Attention(new AttentionShape(dim, dim, heads, headDim, ProjectionBias: false, settings.UpcastAttention), spec);
        norm2 = new LayerNorm(dim, 1e-5, spec);
        attn2 = new Attention(new AttentionShape(dim, settings.CrossAttentionDim, heads, headDim, ProjectionBias: false, settings.UpcastAttention), spec);
        norm3 = new LayerNorm(dim, 1e-5, spec);
        ff = new FeedForward(dim, settings.Dropout, spec);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates, Tensor encoderHiddenStates, AttentionOptions options)
    {
        var hidden = attn1.Forward(norm1.forward(hiddenStates), null, options).Plus(hiddenStates);
        hidden = attn2.Forward(norm2.forward(hidden), encoderHiddenStates, options).Plus(hidden);
        return ff.Forward(norm3.forward(hidden)).Plus(hidden);
    }
}

/// <summary>diffusers' <c>FeedForward</c> with GEGLU: <c>net.0</c> (GEGLU projection), <c>net.1</c> (dropout), <c>net.2</c> (output Linear).</summary>
internal sealed class FeedForward : nn.Module
{
    // Every Module-typed field is registered as a submodule, so the layers are reached through `net` only.
    private readonly TorchSharp.Modules.ModuleList<nn.Module> net;
    private readonly double _dropout;

    public FeedForward(long dim, double dropout, TensorSpec spec, int multiplier = 4) : base(nameof(FeedForward))
    {
        long inner = dim * multiplier;
        _dropout = dropout;
        net = new TorchSharp.Modules.ModuleList<nn.Module>(new Geglu(dim, inner, spec), nn.Identity(), new Linear(inner, dim, hasBias: true, spec));
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates)
    {
        var hidden = ((Geglu)net[0]).Forward(hiddenStates);
        if (_dropout > 0 && training)
            hidden = nn.functional.dropout(hidden, _dropout, training);
        return ((Linear)net[2]).forward(hidden);
    }
}

/// <summary>GEGLU: <c>proj</c> to twice the width, then value * GELU(gate) with the exact (erf) GELU.</summary>
internal sealed class Geglu : nn.Module
{
    private readonly Linear proj;

    public Geglu(long dimIn, long dimOut, TensorSpec spec) : base(nameof(Geglu))
    {
        proj = new Linear(dimIn, dimOut * 2, hasBias: true, spec);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates)
    {
        var halves = proj.forward(hiddenStates).chunk(2, -1);
        return halves[0] * nn.functional.gelu(halves[1]);
    }
}

/// <summary>Settings shared by every transformer of a UNet.</summary>
internal sealed record TransformerSettings(long NormGroups, long CrossAttentionDim, bool UseLinearProjection, bool UpcastAttention, double Dropout);
