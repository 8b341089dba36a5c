using TorchSharp.Modules;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// Dynamic loss scaling for fp16 training with the semantics of PyTorch's <c>GradScaler</c>: the loss is multiplied
/// by the scale before backward; gradients are divided by it before the optimizer step; a step whose gradients hold
/// inf/NaN is skipped and the scale halved; after <see cref="GrowthInterval"/> good steps in a row the scale doubles.
/// </summary>
internal sealed class LossScaler
{
    public const double DefaultInitialScale = 65536.0;
    public const int GrowthInterval = 2000;
    public const double GrowthFactor = 2.0;
    public const double BackoffFactor = 0.5;

    public LossScaler(double initialScale = DefaultInitialScale)
    {
        Scale = initialScale;
    }

    public double Scale { get; private set; }

    /// <summary>Good steps since the last growth or backoff.</summary>
    public int GoodSteps { get; private set; }

    /// <summary>Divides every gradient by the scale; returns false (and leaves the gradients) when any is not finite.</summary>
    public bool UnscaleAndCheck(IReadOnlyList<Parameter> parameters) =>
        UnscaleAndCheck(parameters.Select(p => p.grad).Where(g => g is not null).Cast<Tensor>().ToList());

    /// <summary>Divides each gradient tensor by the scale; returns false (and leaves them) when any is not finite. One host sync.</summary>
    public bool UnscaleAndCheck(IReadOnlyList<Tensor> grads)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (grads.Count == 0)
            return true;
        bool finite = (grads.Count == 1 ? grads[0].isfinite().all() : stack(grads.Select(g => g.isfinite().all()).ToList()).all()).item<bool>();
        if (!finite)
            return false;
        double inverse = 1.0 / Scale;
        foreach (var grad in grads)
            grad.TimesInPlace(inverse);
        return true;
    }

    /// <summary>Updates the scale after a step: halve on overflow, double after <see cref="GrowthInterval"/> good steps.</summary>
    public void Update(bool foundInfOrNaN)
    {
        if (foundInfOrNaN)
        {
            Scale *= BackoffFactor;
            GoodSteps = 0;
            return;
        }

        GoodSteps++;
        if (GoodSteps == GrowthInterval)
        {
            Scale *= GrowthFactor;
            GoodSteps = 0;
        }
    }

    public void Restore(double scale, int goodSteps)
    {
        Scale = scale;
        GoodSteps = goodSteps;
    }
}
