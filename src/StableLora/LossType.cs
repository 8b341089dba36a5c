namespace StableLora;

/// <summary>The per-element loss (sd-scripts' <c>loss_type</c>).</summary>
public enum LossType
{
    /// <summary><c>l2</c>: squared error (the default: the plain MSE).</summary>
    L2,

    /// <summary><c>l1</c>: absolute error.</summary>
    L1,

    /// <summary><c>huber</c>: 2c(sqrt(d² + c²) - c), with c from <see cref="LoraTrainingOptions.HuberSchedule"/>.</summary>
    Huber,

    /// <summary><c>smooth_l1</c>: 2(sqrt(d² + c²) - c), with c from <see cref="LoraTrainingOptions.HuberSchedule"/>.</summary>
    SmoothL1,
}

/// <summary>How the Huber threshold c depends on the timestep (sd-scripts' <c>huber_schedule</c>).</summary>
public enum HuberSchedule
{
    /// <summary><c>constant</c>: c = huber_c at every timestep.</summary>
    Constant,

    /// <summary><c>exponential</c>: c = exp(ln(huber_c) x t / num_train_timesteps), from 1 at t = 0 down towards huber_c.</summary>
    Exponential,

    /// <summary><c>snr</c> (sd-scripts' default): c = (1 - huber_c) / (1 + sigma_t)² + huber_c, sigma_t = sqrt((1 - acp_t) / acp_t).</summary>
    Snr,
}
