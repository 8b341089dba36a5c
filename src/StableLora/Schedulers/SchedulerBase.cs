using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>What the six schedulers share: config, noise schedule, ownership of the timestep tensor, step-index checks.</summary>
internal abstract class SchedulerBase : IScheduler
{
    private Func<torch.Tensor>? _createTimesteps;
    private int _stepCount;
    private torch.Tensor? _timesteps;
    private torch.Tensor? _betas;
    private torch.Tensor? _alphasCumprod;

    protected SchedulerBase(SchedulerKind kind, SchedulerConfig config, NoiseSchedule schedule)
    {
        Kind = kind;
        Config = config;
        Schedule = schedule;
    }

    public SchedulerKind Kind { get; }

    public SchedulerConfig Config { get; }

    public torch.Tensor Timesteps => _timesteps ??= (_createTimesteps ?? throw NoTimesteps())().DetachFromDisposeScope();

    public int StepCount => _createTimesteps is null ? throw NoTimesteps() : _stepCount;

    public abstract double InitNoiseSigma { get; }

    /// <summary>Betas, float32 [num_train_timesteps] on the CPU (owned by the scheduler).</summary>
    public torch.Tensor Betas => _betas ??= torch.tensor(Schedule.Betas).DetachFromDisposeScope();

    /// <summary>alphas_cumprod, float32 [num_train_timesteps] on the CPU (owned by the scheduler).</summary>
    public torch.Tensor AlphasCumprod => _alphasCumprod ??= torch.tensor(Schedule.AlphasCumprod).DetachFromDisposeScope();

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

    /// <summary>Stateless schedulers (DDPM, DDIM, Euler) step by index alone; multistep ones override.</summary>
    public virtual void BeginAt(int stepIndex) => CheckStepIndex(stepIndex);

    /// <summary>
    /// The alpha schedulers' add_noise (DDPM, DDIM, PNDM, DPM-Solver in diffusers 0.21.4): float32
    /// alphas_cumprod[t] ** 0.5 * x0 + (1 - alphas_cumprod[t]) ** 0.5 * noise, each product and the sum rounded to float32.
    /// </summary>
    public virtual torch.Tensor AddNoise(torch.Tensor originalSamples, torch.Tensor noise, int stepIndex)
    {
        CheckStepIndex(stepIndex);
        using var scope = torch.NewDisposeScope();
        using var value = Timesteps[stepIndex];
        float alphaProd = AlphaProd(value.ToInt64());
        float sqrtAlphaProd = MathF.Sqrt(alphaProd);
        float sqrtOneMinusAlphaProd = MathF.Sqrt(1f - alphaProd);
        var noisy = originalSamples.Times(sqrtAlphaProd).Plus(noise.Times(sqrtOneMinusAlphaProd));
        return noisy.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        DisposeState();
        _timesteps?.Dispose();
        _timesteps = null;
        _betas?.Dispose();
        _betas = null;
        _alphasCumprod?.Dispose();
        _alphasCumprod = null;
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases per-generation history (model outputs kept by multistep schedulers).</summary>
    protected virtual void DisposeState()
    {
    }

    /// <summary>
    /// <paramref name="timesteps"/> if every one indexes the training schedule. A 'leading' layout with steps_offset can
    /// start past the last training timestep (SD's steps_offset 1 at 1000 steps starts at 1000), where diffusers fails
    /// with an IndexError in its first step.
    /// </summary>
    /// <exception cref="InvalidOptionsException">A timestep is outside [0, num_train_timesteps).</exception>
    protected long[] CheckedTimesteps(long[] timesteps, int numInferenceSteps)
    {
        int trainSteps = Schedule.AlphasCumprod.Length;
        long highest = timesteps.Length == 0 ? 0 : timesteps.Max();
        long lowest = timesteps.Length == 0 ? 0 : timesteps.Min();
        if (highest >= trainSteps || lowest < 0)
        {
            throw new InvalidOptionsException(nameof(GenerationOptions.Steps), numInferenceSteps,
                $"{ClassName} with steps_offset {Config.StepsOffset ?? 0} would use timestep {(highest >= trainSteps ? highest : lowest)}, outside the {trainSteps} training timesteps 0..{trainSteps - 1} (diffusers fails too); use fewer steps");
        }
        return timesteps;
    }

    protected void ReplaceTimesteps(long[] timesteps) => ReplaceTimesteps(timesteps.Length, () => torch.tensor(timesteps, torch.int64));

    protected void ReplaceTimesteps(float[] timesteps) => ReplaceTimesteps(timesteps.Length, () => torch.tensor(timesteps, torch.float32));

    protected void ReplaceTimesteps(double[] timesteps) => ReplaceTimesteps(timesteps.Length, () => torch.tensor(timesteps, torch.float64));

    /// <exception cref="InvalidOptionsException">Fewer than 1 or more than <paramref name="trainTimesteps"/> steps.</exception>
    protected void CheckInferenceSteps(int numInferenceSteps, int trainTimesteps)
    {
        if (numInferenceSteps < 1)
            throw new InvalidOptionsException(nameof(GenerationOptions.Steps), numInferenceSteps, "must be at least 1");
        if (numInferenceSteps > trainTimesteps)
        {
            throw new InvalidOptionsException(nameof(GenerationOptions.Steps), numInferenceSteps,
                $"must not exceed the scheduler's num_train_timesteps {trainTimesteps} ({ClassName})");
        }
    }

    protected void CheckStepIndex(int stepIndex)
    {
        int count = StepCount;
        if (stepIndex < 0 || stepIndex >= count)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), stepIndex, $"{ClassName}: the schedule has {count} steps.");
    }

    /// <summary>alphas_cumprod[t] for the per-step float32 scalar arithmetic.</summary>
    protected float AlphaProd(long timestep) => Schedule.AlphasCumprod[timestep];

    /// <summary>The timestep tensor is made when first asked for, so that constructors own no native memory.</summary>
    private void ReplaceTimesteps(int count, Func<torch.Tensor> create)
    {
        _timesteps?.Dispose();
        _timesteps = null;
        _createTimesteps = create;
        _stepCount = count;
    }

    private InvalidOperationException NoTimesteps() => new($"{ClassName}: call SetTimesteps before using the timesteps.");
}
