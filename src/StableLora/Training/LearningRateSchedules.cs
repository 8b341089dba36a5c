namespace StableLora.Training;

/// <summary>
/// A learning-rate schedule as diffusers 0.21.4's <c>get_scheduler</c> builds it: a pure function of the number of
/// scheduler steps taken, whose value multiplies each parameter group's peak learning rate (PyTorch's <c>LambdaLR</c>:
/// <c>base_lr * lambda(k)</c>). The arithmetic follows diffusers' lambdas operation for operation, in doubles as Python's
/// floats are, so the learning rates are the same to the bit.
/// </summary>
/// <param name="Kind">The schedule.</param>
/// <param name="WarmupSteps">Linear warm-up steps (ignored by <see cref="LearningRateSchedule.Constant"/>).</param>
/// <param name="TrainingSteps">The run's length in scheduler steps.</param>
/// <param name="Cycles">cosine_with_restarts' <c>num_cycles</c>.</param>
/// <param name="Power">polynomial's <c>power</c>.</param>
/// <param name="EndLearningRate">polynomial's <c>lr_end</c>, an absolute learning rate.</param>
/// <param name="InitialLearningRate">polynomial's <c>lr_init</c>: the optimizer's default learning rate, which lr_end is relative to.</param>
internal sealed record LearningRateScheduleSettings(
    LearningRateSchedule Kind, long WarmupSteps, long TrainingSteps, int Cycles = 1, double Power = 1.0, double EndLearningRate = 1e-7, double InitialLearningRate = 1e-4)
{
    /// <summary>diffusers' default <c>lr_end</c> of the polynomial schedule.</summary>
    public const double DefaultEndLearningRate = 1e-7;

    /// <summary>The schedule of a run's options: warm-up from <see cref="LoraTrainingOptions.WarmupRatio"/> when given (kohya's int(ratio x steps)), else WarmupSteps.</summary>
    public static LearningRateScheduleSettings For(LoraTrainingOptions options) => new(
        options.LearningRateSchedule,
        EffectiveWarmupSteps(options),
        options.MaxSteps,
        options.LearningRateCycles ?? 1,
        options.LearningRatePower ?? 1.0,
        options.LearningRateEnd ?? DefaultEndLearningRate,
        options.LearningRate);

    /// <summary>The warm-up steps the schedule uses: 0 for constant, int(ratio x MaxSteps) with a ratio, else WarmupSteps.</summary>
    public static long EffectiveWarmupSteps(LoraTrainingOptions options) =>
        options.LearningRateSchedule == LearningRateSchedule.Constant ? 0
        : options.WarmupRatio is { } ratio ? (long)Math.Floor(ratio * options.MaxSteps)
        : options.EffectiveWarmupSteps;

    /// <summary>The multiplier after <paramref name="step"/> scheduler steps (diffusers' <c>lr_lambda(current_step)</c>).</summary>
    public double Multiplier(long step)
    {
        switch (Kind)
        {
            case LearningRateSchedule.Constant:
                return 1.0;
            case LearningRateSchedule.ConstantWithWarmup:
                // diffusers: float(current_step) / float(max(1.0, num_warmup_steps))
                return step < WarmupSteps ? step / Math.Max(1.0, WarmupSteps) : 1.0;
            case LearningRateSchedule.Linear:
                if (step < WarmupSteps)
                    return Warmup(step);
                return Math.Max(0.0, (double)(TrainingSteps - step) / Math.Max(1, TrainingSteps - WarmupSteps));
            case LearningRateSchedule.Cosine:
                return CosineWithWarmup.Multiplier(step, WarmupSteps, TrainingSteps);
            case LearningRateSchedule.CosineWithRestarts:
            {
                if (step < WarmupSteps)
                    return Warmup(step);
                double progress = (double)(step - WarmupSteps) / Math.Max(1, TrainingSteps - WarmupSteps);
                if (progress >= 1.0)
                    return 0.0;
                // Python's float % equals the C remainder for these non-negative operands.
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * ((double)Cycles * progress % 1.0))));
            }
            case LearningRateSchedule.Polynomial:
            {
                if (step < WarmupSteps)
                    return Warmup(step);
                if (step > TrainingSteps)
                    return EndLearningRate / InitialLearningRate;
                double range = InitialLearningRate - EndLearningRate;
                long decaySteps = TrainingSteps - WarmupSteps;
                if (decaySteps == 0)
                    throw new InvalidOperationException("the polynomial schedule has no decay steps (warm-up fills the run) and diffusers divides by zero here");
                double remaining = 1 - (double)(step - WarmupSteps) / decaySteps;
                double decay = range * Math.Pow(remaining, Power) + EndLearningRate;
                return decay / InitialLearningRate;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(Kind), Kind, "unknown learning-rate schedule");
        }
    }

    /// <summary>The warm-up ramp of every schedule but constant_with_warmup: float(current_step) / float(max(1, num_warmup_steps)).</summary>
    private double Warmup(long step) => (double)step / Math.Max(1, WarmupSteps);

    /// <summary>diffusers' name of a schedule (<c>--lr_scheduler</c>, kohya's <c>ss_lr_scheduler</c>).</summary>
    public static string Name(LearningRateSchedule kind) => kind switch
    {
        LearningRateSchedule.Constant => "constant",
        LearningRateSchedule.ConstantWithWarmup => "constant_with_warmup",
        LearningRateSchedule.Linear => "linear",
        LearningRateSchedule.Cosine => "cosine",
        LearningRateSchedule.CosineWithRestarts => "cosine_with_restarts",
        LearningRateSchedule.Polynomial => "polynomial",
        _ => kind.ToString(),
    };
}
