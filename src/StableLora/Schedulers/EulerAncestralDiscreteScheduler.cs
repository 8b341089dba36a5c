using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// diffusers' <c>EulerAncestralDiscreteScheduler</c>: an Euler step down to sigma_down, then fresh noise of standard
/// deviation sigma_up, drawn from the generator once per step.
/// </summary>
internal sealed class EulerAncestralDiscreteScheduler : EulerSchedulerBase
{
    public EulerAncestralDiscreteScheduler(SchedulerConfig config)
        : base(SchedulerKind.EulerAncestralDiscrete, config, PredictionType.Epsilon, PredictionType.VPrediction)
    {
    }

    public override SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null)
    {
        CheckStepIndex(stepIndex);
        using var scope = torch.NewDisposeScope();
        float sigma = SigmaValues[stepIndex];
        var predOriginal = PredictOriginal(modelOutput, sample, sigma);

        float sigmaFrom = sigma;
        float sigmaTo = SigmaValues[stepIndex + 1];
        float sigmaUp = MathF.Sqrt(sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo) / (sigmaFrom * sigmaFrom));
        float sigmaDown = MathF.Sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);

        var derivative = (sample - predOriginal).DividedBy(sigma);
        float dt = sigmaDown - sigma;
        var prevSample = sample.Plus(derivative.Times(dt));
        var noise = SchedulerNoise.RandnLike(modelOutput, generator);
        prevSample = prevSample.Plus(noise.Times(sigmaUp));
        return new SchedulerStepOutput(prevSample.MoveToOuterDisposeScope(), predOriginal.MoveToOuterDisposeScope());
    }
}
