using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>What the six schedulers share: config, noise schedule, ownership of the timestep tensor, step-index checks.</summary>
internal abstract class SchedulerBase : IScheduler
{
    private torch.Tensor? _timesteps;

    protected SchedulerBase(SchedulerKind kind, SchedulerConfig config, NoiseSchedule schedule)
    {
        Kind = kind;
        Config = config;
        Schedule = schedule;
    }

    public SchedulerKind Kind { get; }

    public SchedulerConfig Config { get; }

    public torch.Tensor Timesteps => _timesteps ?? throw new InvalidOperationException($"{ClassName}: call SetTimesteps before using the timesteps.");

    public int StepCount => (int)Timesteps.shape[0];

    public abstract double InitNoiseSigma { get; }

    /// <summary>Betas, float32 [num_train_timesteps] on the CPU (owned by the scheduler).</summary>
    public torch.Tensor Betas => Schedule.Betas;

    /// <summary>alphas_cumprod, float32 [num_train_timesteps] on the CPU (owned by the scheduler).</summary>
    public torch.Tensor AlphasCumprod => Schedule.AlphasCumprod;

    protected NoiseSchedule Schedule { get; }

    protected string ClassName => SchedulerKindNames.ClassName(Kind);

    public abstract void SetTimesteps(int numInferenceSteps);

    public torch.Tensor TimestepAt(int stepIndex)
    {
        CheckStepIndex(stepIndex);
        return Timesteps[stepIndex].clone();
    }

    public virtual torch.Tensor ScaleModelInput(torch.Tensor sample, int stepIndex)
    {
        CheckStepIndex(stepIndex);
        return sample.alias();
    }

    public abstract SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null);

    public void Dispose()
    {
        DisposeState();
        _timesteps?.Dispose();
        _timesteps = null;
        Schedule.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases per-generation history (model outputs kept by multistep schedulers).</summary>
    protected virtual void DisposeState()
    {
    }

    protected void ReplaceTimesteps(torch.Tensor timesteps)
    {
        _timesteps?.Dispose();
        _timesteps = timesteps.DetachFromDisposeScope();
    }

    protected void CheckInferenceSteps(int numInferenceSteps, int trainTimesteps)
    {
        if (numInferenceSteps < 1)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps, $"{ClassName}: at least one inference step is needed.");
        if (numInferenceSteps > trainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps,
                $"{ClassName}: cannot take more inference steps than the {trainTimesteps} training timesteps.");
    }

    protected void CheckStepIndex(int stepIndex)
    {
        int count = StepCount;
        if (stepIndex < 0 || stepIndex >= count)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), stepIndex, $"{ClassName}: the schedule has {count} steps.");
    }

    /// <summary>alphas_cumprod[t] for the per-step float32 scalar arithmetic.</summary>
    protected float AlphaProd(long timestep) => Schedule.AlphasCumprodValues[timestep];
}
