using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Lora;

/// <summary>
/// What a LoRA file holds for one adapted module, in format-neutral form: the module's key (<see cref="ModuleKeys"/>),
/// the file key it came from (for messages), and the tensors of its kind. Each kind computes the dense weight change it
/// stands for, in float64, with the merge formulas that kohya, LyCORIS, ComfyUI and AUTOMATIC1111 share.
/// </summary>
internal abstract record ModuleAdapterWeights(string Key, string SourceKey)
{
    /// <summary>A word for the kind ("LoRA", "LoHa", ...), for messages.</summary>
    public abstract string Kind { get; }

    /// <summary>The file it was read from (for messages).</summary>
    public string SourcePath { get; init; } = "(in memory)";

    /// <summary>DoRA's magnitude vector (<c>dora_scale</c>), or null.</summary>
    public Tensor? DoraScale { get; init; }

    /// <summary>Every tensor it holds (to dispose, to move).</summary>
    public abstract IEnumerable<Tensor> Tensors { get; }

    /// <summary>The change at multiplier 1 of a base weight <paramref name="baseWeight"/> (alpha / rank included; DoRA applied), float64, shaped like it.</summary>
    public Tensor DenseDelta(Tensor baseWeight)
    {
        using var scope = NewDisposeScope();
        var shape = baseWeight.shape;
        var delta = RawDelta(shape);
        if (delta.NumberOfElements != baseWeight.NumberOfElements)
            throw new InvalidModelFileException(SourcePath, SourceKey, $"the {Kind} gives {delta.NumberOfElements} weight elements but the module's weight is {IO.TensorInfo.FormatShape(shape)}");
        delta = delta.reshape(shape);
        if (DoraScale is { } magnitude)
            delta = Dora.Delta(baseWeight.detach().to(float64), delta, magnitude.to(float64), SourcePath, SourceKey);
        return delta.MoveToOuterDisposeScope();
    }

    /// <summary>The bias change at multiplier 1, or null.</summary>
    public virtual Tensor? DenseBiasDelta() => null;

    /// <summary>The weight change before DoRA, float64; any shape with the weight's element count.</summary>
    protected abstract Tensor RawDelta(long[] weightShape);

    protected static double ScaleOf(double? alpha, long rank) => alpha is { } a && a != 0 && rank > 0 ? a / rank : 1.0;
}

/// <summary>
/// A LoRA or LoCon module: <c>down</c> [r, in] or [r, in, k, k], <c>up</c> [out, r] or [out, r, 1, 1], and for
/// LyCORIS' Tucker form a <c>mid</c> [r, r, k, k] with down [r, in, 1, 1]. Scale alpha / r.
/// </summary>
internal sealed record LoraModuleWeights(string Key, Tensor Down, Tensor Up, double Alpha, string SourceKey, Tensor? Mid = null) : ModuleAdapterWeights(Key, SourceKey)
{
    public int Rank => (int)Down.shape[0];

    public override string Kind => Mid is null ? "LoRA" : "LoCon (Tucker)";

    public double Scale => Alpha / Rank;

    /// <summary>Whether it is a plain low-rank pair that a <see cref="LoraAdapter"/> computes exactly (no Tucker core, no DoRA).</summary>
    public bool IsPlain => Mid is null && DoraScale is null;

    public override IEnumerable<Tensor> Tensors => new[] { Down, Up, Mid, DoraScale }.Where(t => t is not null)!;

    protected override Tensor RawDelta(long[] weightShape)
    {
        var up = Up.to(float64).reshape(Up.shape[0], -1);
        var down = Down.to(float64);
        if (Mid is { } mid)
        {
            // ΔW[o, i, y, x] = Σ_a,b up[o, a] · mid[a, b, y, x] · down[b, i]
            return einsum("oa,abyx,bi->oiyx", up, mid.to(float64), down.reshape(down.shape[0], -1)).Times(Scale);
        }

        return up.matmul(down.reshape(Rank, -1)).Times(Scale);
    }
}

/// <summary>
/// LyCORIS LoHa: ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) x alpha / r with r = w1_b's first dimension; in the Tucker form
/// (<c>hada_t1</c>, <c>hada_t2</c> [r, r, k, k], a factors [r, out], b factors [r, in]) each factor is rebuilt around its core.
/// </summary>
internal sealed record LohaModuleWeights(string Key, Tensor W1A, Tensor W1B, Tensor W2A, Tensor W2B, double? Alpha, string SourceKey, Tensor? T1 = null, Tensor? T2 = null)
    : ModuleAdapterWeights(Key, SourceKey)
{
    public override string Kind => "LoHa";

    public int Rank => (int)W1B.shape[0];

    public override IEnumerable<Tensor> Tensors => new[] { W1A, W1B, W2A, W2B, T1, T2, DoraScale }.Where(t => t is not null)!;

    protected override Tensor RawDelta(long[] weightShape)
    {
        var first = Factor(W1A, W1B, T1);
        var second = Factor(W2A, W2B, T2);
        return (first * second).Times(ScaleOf(Alpha, Rank));
    }

    private static Tensor Factor(Tensor a, Tensor b, Tensor? core) =>
        core is null
            ? a.to(float64).matmul(b.to(float64))
            : einsum("abyx,ao,bi->oiyx", core.to(float64), a.to(float64), b.to(float64));
}

/// <summary>
/// LyCORIS LoKr: ΔW = kron(w1, w2), each factor stored whole (<c>lokr_w1</c>, <c>lokr_w2</c>) or as a low-rank pair
/// (<c>_a</c>, <c>_b</c>; w2 also in Tucker form around <c>lokr_t2</c>). alpha / r applies only when a factor is
/// decomposed (r = that pair's inner dimension, w2's when both are); with both factors whole the scale is 1.
/// </summary>
internal sealed record LokrModuleWeights(string Key, double? Alpha, string SourceKey) : ModuleAdapterWeights(Key, SourceKey)
{
    public Tensor? W1 { get; init; }
    public Tensor? W1A { get; init; }
    public Tensor? W1B { get; init; }
    public Tensor? W2 { get; init; }
    public Tensor? W2A { get; init; }
    public Tensor? W2B { get; init; }
    public Tensor? T2 { get; init; }

    public override string Kind => "LoKr";

    public override IEnumerable<Tensor> Tensors => new[] { W1, W1A, W1B, W2, W2A, W2B, T2, DoraScale }.Where(t => t is not null)!;

    protected override Tensor RawDelta(long[] weightShape)
    {
        long rank = 0;
        Tensor w1;
        if (W1 is { } whole1)
        {
            w1 = whole1.to(float64);
        }
        else
        {
            w1 = W1A!.to(float64).matmul(W1B!.to(float64));
            rank = W1B!.shape[0];
        }

        Tensor w2;
        if (W2 is { } whole2)
        {
            w2 = whole2.to(float64);
        }
        else if (T2 is { } core)
        {
            w2 = einsum("abyx,ap,bq->pqyx", core.to(float64), W2A!.to(float64), W2B!.to(float64));
            rank = W2B!.shape[0];
        }
        else
        {
            w2 = W2A!.to(float64).matmul(W2B!.to(float64));
            rank = W2B!.shape[0];
        }

        return Kronecker(w1, w2).Times(rank > 0 ? ScaleOf(Alpha, rank) : 1.0);
    }

    /// <summary>kron(w1 [a, c], w2 [b, d, ...]) = [a·b, c·d, ...]: element [i·b + p, j·d + q, ...] = w1[i, j] · w2[p, q, ...].</summary>
    private static Tensor Kronecker(Tensor w1, Tensor w2)
    {
        long a = w1.shape[0], c = w1.shape[1], b = w2.shape[0], d = w2.shape[1];
        var trailing = w2.shape.Skip(2).ToArray();
        var left = w1.reshape(new[] { a, 1, c, 1 }.Concat(trailing.Select(_ => 1L)).ToArray());
        var right = w2.reshape(new[] { 1, b, 1, d }.Concat(trailing).ToArray());
        return (left * right).reshape(new[] { a * b, c * d }.Concat(trailing).ToArray());
    }
}

/// <summary>A full weight difference (<c>diff</c>, and <c>diff_b</c> for the bias), applied without alpha.</summary>
internal sealed record FullModuleWeights(string Key, Tensor Diff, Tensor? DiffBias, string SourceKey) : ModuleAdapterWeights(Key, SourceKey)
{
    public override string Kind => "full difference";

    public override IEnumerable<Tensor> Tensors => new[] { Diff, DiffBias, DoraScale }.Where(t => t is not null)!;

    protected override Tensor RawDelta(long[] weightShape) => Diff.to(float64);

    public override Tensor? DenseBiasDelta() => DiffBias?.to(float64);
}

/// <summary>
/// DoRA (weight-decomposed LoRA): the adapted weight V = W + ΔW is renormalised to the stored magnitude,
/// W_d = V · m / ‖V‖, with the norm taken per input channel (LyCORIS <c>wd_on_output=False</c>, what AUTOMATIC1111 and
/// ComfyUI read, <c>dora_scale</c> [1, in, ...]) or per output channel (LyCORIS' default, [out, 1, ...]). At strength s the
/// weight is W + s·(W_d − W), as ComfyUI and AUTOMATIC1111 apply it, so the change is W_d − W.
/// </summary>
internal static class Dora
{
    public static Tensor Delta(Tensor baseWeight, Tensor delta, Tensor magnitude, string sourcePath, string sourceKey)
    {
        var shape = baseWeight.shape;
        var adapted = baseWeight.Plus(delta);
        long outChannels = shape[0], inChannels = shape[1];
        bool inputAxis = magnitude.dim() >= 2 && magnitude.shape[0] == 1 && magnitude.shape[1] == inChannels;
        bool outputAxis = magnitude.shape[0] == outChannels && magnitude.shape.Skip(1).All(d => d == 1);
        Tensor norm;
        if (inputAxis)
        {
            // ‖V‖ over the output channels (and kernel) of each input channel.
            norm = adapted.transpose(0, 1).reshape(inChannels, -1).norm(1, keepdim: true)
                .reshape(new[] { inChannels, 1L }.Concat(shape.Skip(2).Select(_ => 1L)).ToArray()).transpose(0, 1);
        }
        else if (outputAxis)
        {
            norm = adapted.reshape(outChannels, -1).norm(1, keepdim: true).reshape(new[] { outChannels }.Concat(shape.Skip(1).Select(_ => 1L)).ToArray());
        }
        else
        {
            throw new InvalidModelFileException(sourcePath, sourceKey,
                $"dora_scale {IO.TensorInfo.FormatShape(magnitude.shape)} fits neither the input ([1, {inChannels}, ...]) nor the output ([{outChannels}, 1, ...]) channels of the weight {IO.TensorInfo.FormatShape(shape)}");
        }

        var decomposed = adapted * (magnitude.reshape(norm.shape) / norm);
        return decomposed - baseWeight;
    }
}
