using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// diffusers' <c>DPMSolverMultistepScheduler</c> with algorithm_type 'dpmsolver++' (DPM-Solver++ of Lu et al. 2022;
/// 2M with the defaults solver_order = 2, solver_type 'midpoint'), optional Karras sigmas. The solver works in
/// lambda = log(alpha_t / sigma_t) at integer timesteps; the first step is first order, and with lower_order_final
/// the final steps of schedules under 15 steps drop to lower orders for stability.
/// </summary>
internal sealed class DpmSolverMultistepScheduler : SchedulerBase
{
    private readonly int _trainSteps;
    private readonly int _stepsOffset;
    private readonly TimestepSpacing _spacing;
    private readonly PredictionType _prediction;
    private readonly int _solverOrder;
    private readonly bool _heun;
    private readonly bool _lowerOrderFinal;
    private readonly bool _useKarrasSigmas;
    private readonly double _lambdaMinClipped;
    private readonly float[] _alpha;
    private readonly float[] _sigma;
    private readonly float[] _lambda;
    private readonly List<torch.Tensor> _modelOutputs = [];
    private long[] _timestepValues = [];
    private int _lowerOrderNums;
    private int _nextStep;

    public DpmSolverMultistepScheduler(SchedulerConfig config)
        : base(SchedulerKind.DpmSolverMultistep, config, NoiseSchedule.Create(config, "DPMSolverMultistepScheduler"))
    {
        _trainSteps = ConfigValues.NumTrainTimesteps(config);
        _stepsOffset = ConfigValues.StepsOffset(config);
        _spacing = ConfigValues.Spacing(config, TimestepSpacing.Linspace);
        _prediction = ConfigValues.Prediction(config, ClassName, PredictionType.Epsilon, PredictionType.Sample, PredictionType.VPrediction);
        ConfigValues.RejectThresholding(config);

        // diffusers maps the deprecated 'deis' algorithm and the 'logrho'/'bh1'/'bh2' solver types as here.
        if (config.AlgorithmType is not (null or "dpmsolver++" or "deis"))
            throw config.Unsupported("algorithm_type", config.AlgorithmType, "only 'dpmsolver++' is implemented ('dpmsolver', 'sde-dpmsolver' and 'sde-dpmsolver++' are not)");
        _heun = config.SolverType switch
        {
            null or "midpoint" or "logrho" or "bh1" or "bh2" => false,
            "heun" => true,
            var other => throw config.Unsupported("solver_type", other, "expected 'midpoint' or 'heun'"),
        };
        _solverOrder = config.SolverOrder ?? 2;
        if (_solverOrder is < 1 or > 3)
            throw config.Unsupported("solver_order", _solverOrder, "expected 1, 2 or 3");
        if (config.VarianceType is "learned" or "learned_range")
            throw config.Unsupported("variance_type", config.VarianceType, "learned variances need a model with extra output channels");
        _lowerOrderFinal = config.LowerOrderFinal ?? true;
        _useKarrasSigmas = config.UseKarrasSigmas ?? false;
        _lambdaMinClipped = config.LambdaMinClipped ?? double.NegativeInfinity;

        // The reference torch 1.13 (no MKL) takes these logs, and each step's exp(-h), with SLEEF's vectorised
        // functions (within 1 ulp), current libtorch with MKL's; the C library's correctly rounded logf/expf stand in
        // for both, so a step can differ from diffusers by a few 1e-7 (the fixture's 20-step loop by about 1e-5).
        float[] alphasCumprod = Schedule.AlphasCumprod;
        _alpha = alphasCumprod.Select(MathF.Sqrt).ToArray();
        _sigma = alphasCumprod.Select(a => MathF.Sqrt(1 - a)).ToArray();
        _lambda = _alpha.Zip(_sigma, (alpha, sigma) => MathF.Log(alpha) - MathF.Log(sigma)).ToArray();
        Sigmas = Schedule.TrainingSigmas.Select(s => (double)s).ToArray();
        if (_lambda.All(l => l < _lambdaMinClipped))
        {
            throw config.Unsupported("lambda_min_clipped", _lambdaMinClipped,
                $"it clips every training timestep (the largest lambda is {_lambda.Max().ToString("G6", System.Globalization.CultureInfo.InvariantCulture)}); diffusers then steps at timestep -1");
        }
    }

    public override double InitNoiseSigma => 1.0;

    /// <summary>
    /// diffusers' <c>sigmas</c>: the training table sqrt((1 - acp) / acp) (float32 values), or with Karras sigmas the
    /// float64 Karras levels in the ascending order diffusers computes them. The solver itself does not use them.
    /// </summary>
    public IReadOnlyList<double> Sigmas { get; private set; }

    public override void SetTimesteps(int numInferenceSteps)
    {
        CheckInferenceSteps(numInferenceSteps, _trainSteps);
        int clipped = _lambda.Count(l => l < _lambdaMinClipped);
        int lastTimestep = _trainSteps - clipped;
        long[] timesteps = TimestepLayouts.DpmSolver(_spacing, _trainSteps, lastTimestep, numInferenceSteps, _stepsOffset);

        if (_useKarrasSigmas)
        {
            float[] training = Schedule.TrainingSigmas;
            double[] karras = KarrasSigmas.Ramp(training[0], training[^1], numInferenceSteps);
            var logSigmas = KarrasSigmas.LogSigmas(training);
            timesteps = karras.Select(s => (long)NumpyMath.Round(KarrasSigmas.SigmaToTimestep(s, logSigmas))).Reverse().ToArray();
            Sigmas = karras;
        }
        else
        {
            Sigmas = Schedule.TrainingSigmas.Select(s => (double)s).ToArray();
        }

        _timestepValues = CheckedTimesteps(FirstOccurrences(timesteps), numInferenceSteps);
        ReplaceTimesteps(_timestepValues);
        ResetState();
    }

    public override SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null)
    {
        CheckStepIndex(stepIndex);
        if (stepIndex != _nextStep)
            throw new InvalidOperationException($"DPMSolverMultistepScheduler keeps a history of model outputs and must be stepped in order: expected step {_nextStep}, got {stepIndex} (call SetTimesteps to start over).");
        using var scope = torch.NewDisposeScope();
        int count = _timestepValues.Length;
        long timestep = _timestepValues[stepIndex];
        long prevTimestep = stepIndex == count - 1 ? 0 : _timestepValues[stepIndex + 1];
        bool shortSchedule = _lowerOrderFinal && count < 15;
        bool lowerOrderFinal = stepIndex == count - 1 && shortSchedule;
        bool lowerOrderSecond = stepIndex == count - 2 && shortSchedule;

        var x0 = DataPrediction(modelOutput, timestep, sample);
        if (_modelOutputs.Count == _solverOrder)
        {
            _modelOutputs[0].Dispose();
            _modelOutputs.RemoveAt(0);
        }
        _modelOutputs.Add(x0.DetachFromDisposeScope());

        torch.Tensor prevSample;
        if (_solverOrder == 1 || _lowerOrderNums < 1 || lowerOrderFinal)
            prevSample = FirstOrderUpdate(x0, timestep, prevTimestep, sample);
        else if (_solverOrder == 2 || _lowerOrderNums < 2 || lowerOrderSecond)
            prevSample = SecondOrderUpdate(_timestepValues[stepIndex - 1], timestep, prevTimestep, sample);
        else
            prevSample = ThirdOrderUpdate(_timestepValues[stepIndex - 2], _timestepValues[stepIndex - 1], timestep, prevTimestep, sample);

        if (_lowerOrderNums < _solverOrder)
            _lowerOrderNums++;
        _nextStep++;
        return new SchedulerStepOutput(prevSample.MoveToOuterDisposeScope(), null);
    }

    /// <summary>
    /// diffusers finds each step's place in the full schedule by its timestep, and its history (model_outputs,
    /// lower_order_nums) starts empty: the first img2img step is first order, and lower_order_final still looks at the
    /// full schedule's length.
    /// </summary>
    public override void BeginAt(int stepIndex)
    {
        CheckStepIndex(stepIndex);
        if (_lowerOrderNums != 0 || _modelOutputs.Count != 0)
            throw new InvalidOperationException("DPMSolverMultistepScheduler: BeginAt must come before the first step (call SetTimesteps to start over).");
        _nextStep = stepIndex;
    }

    protected override void DisposeState() => ResetState();

    /// <summary>diffusers' <c>convert_model_output</c> for dpmsolver++: the model's estimate of x0.</summary>
    private torch.Tensor DataPrediction(torch.Tensor modelOutput, long timestep, torch.Tensor sample)
    {
        float alpha = _alpha[timestep], sigma = _sigma[timestep];
        return _prediction switch
        {
            PredictionType.Epsilon => (sample - modelOutput.Times(sigma)).DividedBy(alpha),
            PredictionType.Sample => modelOutput.alias(),
            _ => sample.Times(alpha) - modelOutput.Times(sigma),
        };
    }

    private torch.Tensor FirstOrderUpdate(torch.Tensor x0, long s, long t, torch.Tensor sample)
    {
        float h = _lambda[t] - _lambda[s];
        float expm1 = MathF.Exp(-h) - 1f;
        return sample.Times(_sigma[t] / _sigma[s]) - x0.Times(_alpha[t] * expm1);
    }

    private torch.Tensor SecondOrderUpdate(long s1, long s0, long t, torch.Tensor sample)
    {
        var m0 = _modelOutputs[^1];
        var m1 = _modelOutputs[^2];
        float h = _lambda[t] - _lambda[s0];
        float h0 = _lambda[s0] - _lambda[s1];
        float r0 = h0 / h;
        var d1 = (m0 - m1).Times(1f / r0);
        float expm1 = MathF.Exp(-h) - 1f;
        var x = sample.Times(_sigma[t] / _sigma[s0]) - m0.Times(_alpha[t] * expm1);
        return _heun
            ? x.Plus(d1.Times(_alpha[t] * (expm1 / h + 1f)))
            : x - d1.Times(0.5f * (_alpha[t] * expm1));
    }

    private torch.Tensor ThirdOrderUpdate(long s2, long s1, long s0, long t, torch.Tensor sample)
    {
        var m0 = _modelOutputs[^1];
        var m1 = _modelOutputs[^2];
        var m2 = _modelOutputs[^3];
        float h = _lambda[t] - _lambda[s0];
        float h0 = _lambda[s0] - _lambda[s1];
        float h1 = _lambda[s1] - _lambda[s2];
        float r0 = h0 / h, r1 = h1 / h;
        var d10 = (m0 - m1).Times(1f / r0);
        var d11 = (m1 - m2).Times(1f / r1);
        var d1 = d10.Plus((d10 - d11).Times(r0 / (r0 + r1)));
        var d2 = (d10 - d11).Times(1f / (r0 + r1));
        float expm1 = MathF.Exp(-h) - 1f;
        return (sample.Times(_sigma[t] / _sigma[s0]) - m0.Times(_alpha[t] * expm1))
            .Plus(d1.Times(_alpha[t] * (expm1 / h + 1f)))
            - d2.Times(_alpha[t] * ((expm1 + h) / (h * h) - 0.5f));
    }

    /// <summary><c>timesteps[np.sort(np.unique(timesteps, return_index=True)[1])]</c>: duplicates dropped, order kept.</summary>
    private static long[] FirstOccurrences(long[] timesteps)
    {
        var seen = new HashSet<long>();
        return timesteps.Where(seen.Add).ToArray();
    }

    private void ResetState()
    {
        foreach (var output in _modelOutputs)
            output.Dispose();
        _modelOutputs.Clear();
        _lowerOrderNums = 0;
        _nextStep = 0;
    }
}
