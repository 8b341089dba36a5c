using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// What Euler and Euler ancestral share: float timesteps, the sigma of each (np.interp of the training sigmas in
/// float64, stored as float32, with a final 0), the init noise sigma and the input scaling 1 / sqrt(sigma^2 + 1).
/// </summary>
internal abstract class EulerSchedulerBase : SchedulerBase
{
    private readonly int _trainSteps;
    private readonly int _stepsOffset;
    private readonly TimestepSpacing _spacing;

    protected EulerSchedulerBase(SchedulerKind kind, SchedulerConfig config, params PredictionType[] supportedPredictions)
        : base(kind, config, NoiseSchedule.Create(config, SchedulerKindNames.ClassName(kind)))
    {
        _trainSteps = ConfigValues.NumTrainTimesteps(config);
        _stepsOffset = ConfigValues.StepsOffset(config);
        _spacing = ConfigValues.Spacing(config, TimestepSpacing.Linspace);
        Prediction = ConfigValues.Prediction(config, ClassName, supportedPredictions);

        // Before set_timesteps diffusers holds every training sigma (descending) and float64 timesteps 999..0.
        SigmaValues = [.. Enumerable.Reverse(Schedule.TrainingSigmas), 0f];
        var timesteps = Enumerable.Reverse(NumpyMath.Linspace(0, _trainSteps - 1, _trainSteps)).ToArray();
        ReplaceTimesteps(timesteps);
    }

    /// <summary>The sigma of every step plus a final 0, float32 as in diffusers' <c>sigmas</c>.</summary>
    public float[] SigmaValues { get; private set; }

    public override double InitNoiseSigma
    {
        get
        {
            float max = SigmaValues.Max();
            return _spacing is TimestepSpacing.Linspace or TimestepSpacing.Trailing ? max : MathF.Sqrt(max * max + 1);
        }
    }

    protected PredictionType Prediction { get; }

    /// <summary>Whether to replace the interpolated sigmas by Karras sigmas (Euler only).</summary>
    protected virtual bool UseKarrasSigmas => false;

    public override void SetTimesteps(int numInferenceSteps)
    {
        CheckInferenceSteps(numInferenceSteps, _trainSteps);
        float[] timesteps = TimestepLayouts.EulerFamily(_spacing, _trainSteps, numInferenceSteps, _stepsOffset);
        double[] trainingSigmas = Schedule.TrainingSigmas.Select(s => (double)s).ToArray();
        double[] sigmas = timesteps.Select(t => NumpyMath.InterpOverIndex(t, trainingSigmas)).ToArray();

        if (UseKarrasSigmas)
        {
            sigmas = KarrasSigmas.Ramp(sigmas[0], sigmas[^1], numInferenceSteps);
            var logSigmas = KarrasSigmas.LogSigmas(Schedule.TrainingSigmas);
            ReplaceTimesteps(sigmas.Select(s => KarrasSigmas.SigmaToTimestep(s, logSigmas)).ToArray());
        }
        else
        {
            ReplaceTimesteps(timesteps);
        }
        SigmaValues = [.. sigmas.Select(s => (float)s), 0f];
    }

    public override torch.Tensor ScaleModelInput(torch.Tensor sample, int stepIndex)
    {
        CheckStepIndex(stepIndex);
        float sigma = SigmaValues[stepIndex];
        return sample.DividedBy(MathF.Sqrt(sigma * sigma + 1));
    }

    /// <summary>
    /// diffusers 0.21.4's Euler add_noise: x0 + noise * sigma, sigma the float32 sigma of the step whose timestep equals
    /// the given one (the first such step; the timesteps are distinct).
    /// </summary>
    public override torch.Tensor AddNoise(torch.Tensor originalSamples, torch.Tensor noise, int stepIndex)
    {
        CheckStepIndex(stepIndex);
        using var scope = torch.NewDisposeScope();
        return originalSamples.Plus(noise.Times(SigmaValues[stepIndex])).MoveToOuterDisposeScope();
    }

    /// <summary>x0 for the epsilon / v / sample parameterisations at noise level <paramref name="sigma"/>.</summary>
    protected torch.Tensor PredictOriginal(torch.Tensor modelOutput, torch.Tensor sample, float sigma) => Prediction switch
    {
        PredictionType.Epsilon => sample - modelOutput.Times(sigma),
        PredictionType.VPrediction => modelOutput.Times(-sigma / MathF.Sqrt(sigma * sigma + 1)).Plus(sample.DividedBy(sigma * sigma + 1)),
        _ => modelOutput.alias(),
    };
}
