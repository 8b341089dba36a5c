using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// diffusers' <c>DDIMScheduler</c>. <see cref="Eta"/> = 0 (the pipeline default) is deterministic; eta &gt; 0 adds
/// generator noise scaled by eta times the DDPM posterior standard deviation.
/// </summary>
internal sealed class DdimScheduler : SchedulerBase
{
    private readonly int _trainSteps;
    private readonly int _stepsOffset;
    private readonly TimestepSpacing _spacing;
    private readonly PredictionType _prediction;
    private readonly bool _clipSample;
    private readonly float _clipRange;
    private readonly float _finalAlphaProd;
    private long[] _timestepValues = [];
    private int _stepRatio;

    public DdimScheduler(SchedulerConfig config, double eta = 0.0)
        : base(SchedulerKind.Ddim, config, NoiseSchedule.Create(config, "DDIMScheduler", rescaleZeroSnr: config.RescaleBetasZeroSnr ?? false))
    {
        ArgumentOutOfRangeException.ThrowIfNegative(eta);
        Eta = eta;
        _trainSteps = ConfigValues.NumTrainTimesteps(config);
        _stepsOffset = ConfigValues.StepsOffset(config);
        _spacing = ConfigValues.Spacing(config, TimestepSpacing.Leading);
        _prediction = ConfigValues.Prediction(config, ClassName, PredictionType.Epsilon, PredictionType.Sample, PredictionType.VPrediction);
        ConfigValues.RejectThresholding(config);
        if (config.RescaleBetasZeroSnr == true && _prediction == PredictionType.Epsilon)
        {
            throw config.Unsupported("rescale_betas_zero_snr", true,
                "zero terminal SNR makes alpha_cumprod[999] 0, where an epsilon prediction gives no sample (diffusers divides by zero); use it with prediction_type 'v_prediction'");
        }
        _clipSample = config.ClipSample ?? true;
        _clipRange = (float)(config.ClipSampleRange ?? 1.0);
        _finalAlphaProd = (config.SetAlphaToOne ?? true) ? 1f : AlphaProd(0);
    }

    /// <summary>The weight of the stochastic part (the <c>eta</c> argument of diffusers' <c>step</c>).</summary>
    public double Eta { get; }

    public override double InitNoiseSigma => 1.0;

    public override void SetTimesteps(int numInferenceSteps)
    {
        CheckInferenceSteps(numInferenceSteps, _trainSteps);
        var timesteps = CheckedTimesteps(TimestepLayouts.DdimFamily(_spacing, _trainSteps, numInferenceSteps, _stepsOffset), numInferenceSteps);
        _stepRatio = _trainSteps / numInferenceSteps;
        _timestepValues = timesteps;
        ReplaceTimesteps(_timestepValues);
    }

    public override SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null)
    {
        CheckStepIndex(stepIndex);
        using var scope = torch.NewDisposeScope();
        long t = _timestepValues[stepIndex];
        long prevT = t - _stepRatio;
        float alphaProd = AlphaProd(t);
        float alphaProdPrev = prevT >= 0 ? AlphaProd(prevT) : _finalAlphaProd;
        float betaProd = 1 - alphaProd;

        torch.Tensor predOriginal, predEpsilon;
        switch (_prediction)
        {
            case PredictionType.Epsilon:
                predOriginal = (sample - modelOutput.Times(MathF.Sqrt(betaProd))).DividedBy(MathF.Sqrt(alphaProd));
                predEpsilon = modelOutput;
                break;
            case PredictionType.Sample:
                predOriginal = modelOutput.alias();
                predEpsilon = (sample - predOriginal.Times(MathF.Sqrt(alphaProd))).DividedBy(MathF.Sqrt(betaProd));
                break;
            default:
                predOriginal = sample.Times(MathF.Sqrt(alphaProd)) - modelOutput.Times(MathF.Sqrt(betaProd));
                predEpsilon = modelOutput.Times(MathF.Sqrt(alphaProd)).Plus(sample.Times(MathF.Sqrt(betaProd)));
                break;
        }
        if (_clipSample)
            predOriginal = predOriginal.Clamp(-_clipRange, _clipRange);

        float betaProdPrev = 1 - alphaProdPrev;
        float variance = betaProdPrev / betaProd * (1 - alphaProd / alphaProdPrev);
        float stdDev = (float)Eta * MathF.Sqrt(variance);

        var direction = predEpsilon.Times(MathF.Sqrt(1 - alphaProdPrev - stdDev * stdDev));
        var prevSample = predOriginal.Times(MathF.Sqrt(alphaProdPrev)).Plus(direction);
        if (Eta > 0)
            prevSample = prevSample.Plus(SchedulerNoise.RandnLike(modelOutput, generator).Times(stdDev));

        return new SchedulerStepOutput(prevSample.MoveToOuterDisposeScope(), predOriginal.MoveToOuterDisposeScope());
    }
}
