using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// diffusers' <c>PNDMScheduler</c>: pseudo numerical methods for diffusion models. With <c>skip_prk_steps</c> (the SD 1.5
/// config) it is PLMS, a linear multistep method that runs N + 1 steps for N &gt;= 2 (the second timestep is used twice)
/// and 1 for N = 1; without it, 12 Runge-Kutta (PRK) warm-up steps over the last four timesteps come first (N - 3 + 12
/// steps in all, N &gt;= 4).
/// </summary>
internal sealed class PndmScheduler : SchedulerBase
{
    private const int PndmOrder = 4;

    private readonly int _trainSteps;
    private readonly int _stepsOffset;
    private readonly TimestepSpacing _spacing;
    private readonly PredictionType _prediction;
    private readonly bool _skipPrkSteps;
    private readonly float _finalAlphaProd;
    private readonly List<torch.Tensor> _ets = [];
    private long[] _timestepValues = [];
    private int _prkStepCount;
    private int _stepRatio;
    private int _counter;
    private int _start;
    private torch.Tensor? _curSample;
    private torch.Tensor? _curModelOutput;

    public PndmScheduler(SchedulerConfig config)
        : base(SchedulerKind.Pndm, config, NoiseSchedule.Create(config, "PNDMScheduler"))
    {
        _trainSteps = ConfigValues.NumTrainTimesteps(config);
        _stepsOffset = ConfigValues.StepsOffset(config);
        _spacing = ConfigValues.Spacing(config, TimestepSpacing.Leading);
        _prediction = ConfigValues.Prediction(config, ClassName, PredictionType.Epsilon, PredictionType.VPrediction);
        _skipPrkSteps = config.SkipPrkSteps ?? false;
        _finalAlphaProd = (config.SetAlphaToOne ?? false) ? 1f : AlphaProd(0);
    }

    public override double InitNoiseSigma => 1.0;

    public override void SetTimesteps(int numInferenceSteps)
    {
        CheckInferenceSteps(numInferenceSteps, _trainSteps);
        if (!_skipPrkSteps && numInferenceSteps < PndmOrder)
        {
            throw new InvalidOptionsException(nameof(GenerationOptions.Steps), numInferenceSteps,
                $"PNDMScheduler with skip_prk_steps false runs Runge-Kutta warm-up steps over the last {PndmOrder} timesteps and needs at least {PndmOrder} steps (diffusers fails too)");
        }
        int stepRatio = _trainSteps / numInferenceSteps;
        var ascending = TimestepLayouts.PndmAscending(_spacing, _trainSteps, numInferenceSteps, _stepsOffset);

        long[] prk, plms;
        if (_skipPrkSteps)
        {
            // np.concatenate([ts[:-1], ts[-2:-1], ts[-1:]])[::-1]: the second-to-last timestep twice; one step has just [t].
            prk = [];
            plms = [.. ascending[..^1], .. ascending[Math.Max(0, ascending.Length - 2)..^1], ascending[^1]];
            Array.Reverse(plms);
        }
        else
        {
            prk = PrkTimesteps(ascending[^PndmOrder..], stepRatio / 2);
            plms = ascending[..^3];
            Array.Reverse(plms);
        }
        _timestepValues = CheckedTimesteps([.. prk, .. plms], numInferenceSteps);
        _stepRatio = stepRatio;
        _prkStepCount = prk.Length;
        ReplaceTimesteps(_timestepValues);
        ResetState();
    }

    public override SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null)
    {
        CheckStepIndex(stepIndex);
        if (stepIndex != _start + _counter)
            throw new InvalidOperationException($"PNDMScheduler keeps a history of model outputs and must be stepped in order: expected step {_start + _counter}, got {stepIndex} (call SetTimesteps to start over).");
        using var scope = torch.NewDisposeScope();
        long timestep = _timestepValues[stepIndex];
        var prevSample = _counter < _prkStepCount ? StepPrk(modelOutput, timestep, sample) : StepPlms(modelOutput, timestep, sample);
        _counter++;
        return new SchedulerStepOutput(prevSample.MoveToOuterDisposeScope(), null);
    }

    /// <summary>
    /// diffusers' counter starts at 0 at whatever timestep is stepped first: the first PLMS step of img2img is a
    /// "first step" (it keeps the sample and steps by the step ratio) and the second the averaging one, whichever
    /// timesteps they are; with PRK warm-up the Runge-Kutta coefficients follow the counter too.
    /// </summary>
    public override void BeginAt(int stepIndex)
    {
        CheckStepIndex(stepIndex);
        if (_counter != 0)
            throw new InvalidOperationException("PNDMScheduler: BeginAt must come before the first step (call SetTimesteps to start over).");
        _start = stepIndex;
    }

    protected override void DisposeState() => ResetState();

    /// <summary>
    /// The last four ascending timesteps t each paired with t + ratio/2, then every point but the last doubled and the
    /// first and last copies dropped, newest first: three groups of four evaluations (t, t-h/2, t-h/2, t-h).
    /// </summary>
    private static long[] PrkTimesteps(long[] lastFour, int halfRatio)
    {
        var pairs = lastFour.SelectMany(t => new[] { t, t + halfRatio }).ToArray();
        var doubled = pairs[..^1].SelectMany(t => new[] { t, t }).ToArray();
        var result = doubled[1..^1];
        Array.Reverse(result);
        return result;
    }

    private torch.Tensor StepPrk(torch.Tensor modelOutput, long timestep, torch.Tensor sample)
    {
        long diffToPrev = _counter % 2 != 0 ? 0 : _stepRatio / 2;
        long prevTimestep = timestep - diffToPrev;
        long groupTimestep = _timestepValues[_counter / 4 * 4];

        var output = modelOutput;
        switch (_counter % 4)
        {
            case 0:
                AccumulateModelOutput(modelOutput, 1.0 / 6);
                _ets.Add(Keep(modelOutput));
                ReplaceCurSample(Keep(sample));
                break;
            case 1:
            case 2:
                AccumulateModelOutput(modelOutput, 1.0 / 3);
                break;
            default:
                output = _curModelOutput is null ? modelOutput.Times(1.0 / 6) : _curModelOutput.Plus(modelOutput.Times(1.0 / 6));
                _curModelOutput?.Dispose();
                _curModelOutput = null;
                break;
        }
        return PrevSample(_curSample ?? sample, groupTimestep, prevTimestep, output);
    }

    private torch.Tensor StepPlms(torch.Tensor modelOutput, long timestep, torch.Tensor sample)
    {
        if (!_skipPrkSteps && _ets.Count < 3)
            throw new InvalidOperationException("PNDMScheduler can only run PLMS steps after at least 12 PRK steps.");
        long prevTimestep = timestep - _stepRatio;
        if (_counter != 1)
        {
            while (_ets.Count > 3)
            {
                _ets[0].Dispose();
                _ets.RemoveAt(0);
            }
            _ets.Add(Keep(modelOutput));
        }
        else
        {
            prevTimestep = timestep;
            timestep += _stepRatio;
        }

        torch.Tensor output;
        int n = _ets.Count;
        if (n == 1 && _counter == 0)
        {
            output = modelOutput;
            ReplaceCurSample(Keep(sample));
        }
        else if (n == 1 && _counter == 1)
        {
            output = modelOutput.Plus(_ets[^1]).DividedBy(2);
            sample = _curSample!.alias();
            ReplaceCurSample(null);
        }
        else if (n == 2)
        {
            output = (_ets[^1].Times(3L) - _ets[^2]).DividedBy(2);
        }
        else if (n == 3)
        {
            output = (_ets[^1].Times(23L) - _ets[^2].Times(16L)).Plus(_ets[^3].Times(5L)).DividedBy(12);
        }
        else
        {
            output = ((_ets[^1].Times(55L) - _ets[^2].Times(59L)).Plus(_ets[^3].Times(37L)) - _ets[^4].Times(9L)).Times(1.0 / 24);
        }
        return PrevSample(sample, timestep, prevTimestep, output);
    }

    /// <summary>diffusers' <c>_get_prev_sample</c>: formula (9) of the PNDM paper, x_t -> x_(t-delta).</summary>
    private torch.Tensor PrevSample(torch.Tensor sample, long timestep, long prevTimestep, torch.Tensor modelOutput)
    {
        float alphaProd = AlphaProd(timestep);
        float alphaProdPrev = prevTimestep >= 0 ? AlphaProd(prevTimestep) : _finalAlphaProd;
        float betaProd = 1 - alphaProd;
        float betaProdPrev = 1 - alphaProdPrev;
        if (_prediction == PredictionType.VPrediction)
            modelOutput = modelOutput.Times(MathF.Sqrt(alphaProd)).Plus(sample.Times(MathF.Sqrt(betaProd)));

        float sampleCoeff = MathF.Sqrt(alphaProdPrev / alphaProd);
        float denominator = alphaProd * MathF.Sqrt(betaProdPrev) + MathF.Sqrt(alphaProd * betaProd * alphaProdPrev);
        return sample.Times(sampleCoeff) - modelOutput.Times(alphaProdPrev - alphaProd).DividedBy(denominator);
    }

    private void AccumulateModelOutput(torch.Tensor modelOutput, double weight)
    {
        var weighted = modelOutput.Times(weight);
        var sum = _curModelOutput is null ? weighted : _curModelOutput.Plus(weighted);
        _curModelOutput?.Dispose();
        _curModelOutput = sum.DetachFromDisposeScope();
    }

    /// <summary>A handle on a caller's tensor that survives the caller disposing theirs (shared storage, no copy).</summary>
    private static torch.Tensor Keep(torch.Tensor tensor) => tensor.alias().DetachFromDisposeScope();

    private void ReplaceCurSample(torch.Tensor? sample)
    {
        _curSample?.Dispose();
        _curSample = sample;
    }

    private void ResetState()
    {
        foreach (var et in _ets)
            et.Dispose();
        _ets.Clear();
        ReplaceCurSample(null);
        _curModelOutput?.Dispose();
        _curModelOutput = null;
        _counter = 0;
        _start = 0;
    }
}
