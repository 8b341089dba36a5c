using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// diffusers' <c>EulerDiscreteScheduler</c> (Algorithm 2 of Karras et al. with s_churn = 0, so deterministic), with
/// optional Karras sigmas. Like diffusers it draws and discards one noise tensor per step when given a generator, so a
/// shared generator advances exactly as it does there.
/// </summary>
internal sealed class EulerDiscreteScheduler : EulerSchedulerBase
{
    private readonly bool _useKarrasSigmas;

    public EulerDiscreteScheduler(SchedulerConfig config)
        : base(SchedulerKind.EulerDiscrete, config, PredictionType.Epsilon, PredictionType.VPrediction, PredictionType.Sample)
    {
        if (config.InterpolationType is not (null or "linear"))
            throw config.Unsupported("interpolation_type", config.InterpolationType, "EulerDiscreteScheduler supports 'linear' only");
        _useKarrasSigmas = config.UseKarrasSigmas ?? false;
    }

    protected override bool UseKarrasSigmas => _useKarrasSigmas;

    public override SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null)
    {
        CheckStepIndex(stepIndex);
        using var scope = torch.NewDisposeScope();
        if (generator is not null)
            SchedulerNoise.RandnLike(modelOutput, generator);

        // gamma = min(s_churn / (N - 1), sqrt(2) - 1) = 0, so sigma_hat = sigma * (gamma + 1) = sigma.
        float sigmaHat = SigmaValues[stepIndex] * (0f + 1f);
        var predOriginal = PredictOriginal(modelOutput, sample, sigmaHat);
        var derivative = (sample - predOriginal).DividedBy(sigmaHat);
        float dt = SigmaValues[stepIndex + 1] - sigmaHat;
        var prevSample = sample.Plus(derivative.Times(dt));
        return new SchedulerStepOutput(prevSample.MoveToOuterDisposeScope(), predOriginal.MoveToOuterDisposeScope());
    }
}
