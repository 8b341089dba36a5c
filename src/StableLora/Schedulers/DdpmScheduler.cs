using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// diffusers' <c>DDPMScheduler</c>: the forward (noising) process used for training targets, and ancestral sampling.
/// Supports variance_type 'fixed_small' (default), 'fixed_small_log' and 'fixed_large'.
/// </summary>
internal sealed class DdpmScheduler : SchedulerBase
{
    private readonly int _trainSteps;
    private readonly int _stepsOffset;
    private readonly TimestepSpacing _spacing;
    private readonly PredictionType _prediction;
    private readonly VarianceType _variance;
    private readonly bool _clipSample;
    private readonly float _clipRange;
    private long[] _timestepValues;
    private int _stepRatio = 1;

    /// <param name="config">The scheduler config.</param>
    /// <param name="zeroTerminalSnr">
    /// Rescale the betas to zero terminal SNR (Lin et al. 2023) as sd-scripts' <c>--zero_terminal_snr</c> does
    /// (<c>fix_noise_scheduler_betas_for_zero_terminal_snr</c>, the same arithmetic as diffusers' <c>rescale_zero_terminal_snr</c>).
    /// </param>
    public DdpmScheduler(SchedulerConfig config, bool zeroTerminalSnr = false)
        : base(SchedulerKind.Ddpm, config, NoiseSchedule.Create(config, "DDPMScheduler", allowSigmoid: true, rescaleZeroSnr: zeroTerminalSnr))
    {
        _trainSteps = ConfigValues.NumTrainTimesteps(config);
        _stepsOffset = ConfigValues.StepsOffset(config);
        _spacing = ConfigValues.Spacing(config, TimestepSpacing.Leading);
        _prediction = ConfigValues.Prediction(config, ClassName, PredictionType.Epsilon, PredictionType.Sample, PredictionType.VPrediction);
        ConfigValues.RejectThresholding(config);
        _variance = config.VarianceType switch
        {
            null or "fixed_small" => VarianceType.FixedSmall,
            "fixed_small_log" => VarianceType.FixedSmallLog,
            "fixed_large" => VarianceType.FixedLarge,
            var other => throw config.Unsupported("variance_type", other, "DDPMScheduler supports 'fixed_small', 'fixed_small_log' and 'fixed_large' (learned variances need a model with twice the output channels)"),
        };
        _clipSample = config.ClipSample ?? true;
        _clipRange = (float)(config.ClipSampleRange ?? 1.0);

        // Before set_timesteps diffusers steps through every training timestep.
        _timestepValues = Enumerable.Range(0, _trainSteps).Reverse().Select(t => (long)t).ToArray();
        ReplaceTimesteps(_timestepValues);
    }

    private enum VarianceType
    {
        FixedSmall,
        FixedSmallLog,
        FixedLarge,
    }

    public override double InitNoiseSigma => 1.0;

    /// <summary>The number of training timesteps (<c>num_train_timesteps</c>); training draws timesteps in [0, this).</summary>
    public int TrainTimesteps => _trainSteps;

    public override void SetTimesteps(int numInferenceSteps)
    {
        CheckInferenceSteps(numInferenceSteps, _trainSteps);
        var timesteps = CheckedTimesteps(TimestepLayouts.DdimFamily(_spacing, _trainSteps, numInferenceSteps, _stepsOffset), numInferenceSteps);
        _stepRatio = _trainSteps / numInferenceSteps;
        _timestepValues = timesteps;
        ReplaceTimesteps(_timestepValues);
    }

    /// <summary>sqrt(acp[t]) * original + sqrt(1 - acp[t]) * noise, one timestep per batch row (training inputs).</summary>
    public torch.Tensor AddNoise(torch.Tensor originalSamples, torch.Tensor noise, torch.Tensor timesteps)
    {
        using var scope = torch.NewDisposeScope();
        var (sqrtAlpha, sqrtOneMinusAlpha) = NoiseCoefficients(originalSamples, timesteps);
        return (sqrtAlpha * originalSamples).Plus(sqrtOneMinusAlpha * noise).MoveToOuterDisposeScope();
    }

    /// <summary>The v-prediction target sqrt(acp[t]) * noise - sqrt(1 - acp[t]) * sample.</summary>
    public torch.Tensor GetVelocity(torch.Tensor sample, torch.Tensor noise, torch.Tensor timesteps)
    {
        using var scope = torch.NewDisposeScope();
        var (sqrtAlpha, sqrtOneMinusAlpha) = NoiseCoefficients(sample, timesteps);
        return (sqrtAlpha * noise - sqrtOneMinusAlpha * sample).MoveToOuterDisposeScope();
    }

    public override SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null)
    {
        CheckStepIndex(stepIndex);
        using var scope = torch.NewDisposeScope();
        long t = _timestepValues[stepIndex];
        long prevT = t - _stepRatio;

        float alphaProd = AlphaProd(t);
        float alphaProdPrev = prevT >= 0 ? AlphaProd(prevT) : 1f;
        float betaProd = 1 - alphaProd;
        float betaProdPrev = 1 - alphaProdPrev;
        float currentAlpha = alphaProd / alphaProdPrev;
        float currentBeta = 1 - currentAlpha;

        var predOriginal = _prediction switch
        {
            PredictionType.Epsilon => (sample - modelOutput.Times(MathF.Sqrt(betaProd))).DividedBy(MathF.Sqrt(alphaProd)),
            PredictionType.Sample => modelOutput.alias(),
            _ => sample.Times(MathF.Sqrt(alphaProd)) - modelOutput.Times(MathF.Sqrt(betaProd)),
        };
        if (_clipSample)
            predOriginal = predOriginal.Clamp(-_clipRange, _clipRange);

        float predOriginalCoeff = MathF.Sqrt(alphaProdPrev) * currentBeta / betaProd;
        float currentSampleCoeff = MathF.Sqrt(currentAlpha) * betaProdPrev / betaProd;
        var prevSample = predOriginal.Times(predOriginalCoeff).Plus(sample.Times(currentSampleCoeff));

        if (t > 0)
        {
            var noise = SchedulerNoise.RandnLike(modelOutput, generator);
            float variance = Variance(alphaProd, alphaProdPrev);
            float scale = _variance switch
            {
                VarianceType.FixedSmallLog => MathF.Exp(0.5f * MathF.Log(variance)),
                VarianceType.FixedLarge => MathF.Sqrt(currentBeta),
                _ => MathF.Sqrt(variance),
            };
            prevSample = prevSample.Plus(noise.Times(scale));
        }

        return new SchedulerStepOutput(prevSample.MoveToOuterDisposeScope(), predOriginal.MoveToOuterDisposeScope());
    }

    /// <summary>The posterior variance (1 - acp_prev) / (1 - acp) * beta_t, clamped at 1e-20.</summary>
    private static float Variance(float alphaProd, float alphaProdPrev)
    {
        float currentBeta = 1 - alphaProd / alphaProdPrev;
        float variance = (1 - alphaProdPrev) / (1 - alphaProd) * currentBeta;
        return MathF.Max(variance, 1e-20f);
    }

    private (torch.Tensor SqrtAlpha, torch.Tensor SqrtOneMinusAlpha) NoiseCoefficients(torch.Tensor like, torch.Tensor timesteps)
    {
        var alphasCumprod = AlphasCumprod.to(like.dtype, like.device);
        var selected = alphasCumprod[timesteps.to(like.device)];
        var sqrtAlpha = selected.Pow(0.5).flatten();
        var sqrtOneMinusAlpha = selected.SubtractedFrom(1).Pow(0.5).flatten();
        while (sqrtAlpha.dim() < like.dim())
        {
            sqrtAlpha = sqrtAlpha.unsqueeze(-1);
            sqrtOneMinusAlpha = sqrtOneMinusAlpha.unsqueeze(-1);
        }
        return (sqrtAlpha, sqrtOneMinusAlpha);
    }
}
