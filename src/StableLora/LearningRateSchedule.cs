namespace StableLora;

/// <summary>
/// The learning-rate schedule: diffusers' <c>get_scheduler</c> names and arithmetic. The multiplier of each parameter
/// group's peak learning rate after k scheduler steps; "warm-up" rises linearly from 0 over the warm-up steps.
/// </summary>
public enum LearningRateSchedule
{
    /// <summary><c>constant</c>: multiplier 1 at every step; there is no warm-up (diffusers ignores warm-up steps for it).</summary>
    Constant,

    /// <summary><c>constant_with_warmup</c>: warm-up, then 1.</summary>
    ConstantWithWarmup,

    /// <summary><c>linear</c>: warm-up, then a straight line down to 0 at the last step.</summary>
    Linear,

    /// <summary><c>cosine</c> (the default, diffusers' training scripts'): warm-up, then half a cosine down to 0.</summary>
    Cosine,

    /// <summary><c>cosine_with_restarts</c>: warm-up, then <see cref="LoraTrainingOptions.LearningRateCycles"/> half-cosines from 1 to 0 (hard restarts).</summary>
    CosineWithRestarts,

    /// <summary>
    /// <c>polynomial</c>: warm-up, then (peak - end) x (1 - progress)^power + end, where end is
    /// <see cref="LoraTrainingOptions.LearningRateEnd"/> relative to <see cref="LoraTrainingOptions.LearningRate"/> (each
    /// group reaches its own peak x end / LearningRate, as in diffusers).
    /// </summary>
    Polynomial,
}
