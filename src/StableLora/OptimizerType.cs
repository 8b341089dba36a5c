namespace StableLora;

/// <summary>The optimizer of the LoRA parameters (sd-scripts' <c>optimizer_type</c>); its arguments go in <see cref="LoraTrainingOptions.OptimizerArguments"/>.</summary>
public enum OptimizerType
{
    /// <summary>AdamW (torch's <c>AdamW</c>; the default). Arguments: <c>betas</c>, <c>eps</c>, <c>weight_decay</c> (default 0.01).</summary>
    AdamW,

    /// <summary>
    /// Prodigy (prodigyopt 1.1.2): Adam with an estimated step size d, the step at d x the learning rate, so the learning
    /// rate should be about 1.0. Arguments: <c>betas</c>, <c>beta3</c>, <c>eps</c>, <c>weight_decay</c>, <c>decouple</c>,
    /// <c>use_bias_correction</c>, <c>safeguard_warmup</c>, <c>d0</c>, <c>d_coef</c>, <c>growth_rate</c>.
    /// </summary>
    Prodigy,

    /// <summary>
    /// Adafactor (transformers' <c>Adafactor</c>): factored second moments; with <c>relative_step</c> (the default) it
    /// computes its own learning rate and the configured one and its schedule are ignored. Arguments: <c>eps</c>,
    /// <c>clip_threshold</c>, <c>decay_rate</c>, <c>beta1</c>, <c>weight_decay</c>, <c>scale_parameter</c>,
    /// <c>relative_step</c>, <c>warmup_init</c>.
    /// </summary>
    Adafactor,

    /// <summary>Lion (lion-pytorch): sign updates with decoupled weight decay; use a learning rate 3-10x below AdamW's. Arguments: <c>betas</c> (default 0.9, 0.99), <c>weight_decay</c>.</summary>
    Lion,

    /// <summary>SGD with Nesterov momentum (sd-scripts' <c>SGDNesterov</c>). Arguments: <c>momentum</c> (default 0.9), <c>weight_decay</c>.</summary>
    Sgd,
}
