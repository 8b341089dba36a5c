namespace StableLora;

/// <summary>
/// How a single-file checkpoint (an original LDM/CompVis <c>.safetensors</c> or <c>.ckpt</c> of SD 1.x) is read.
/// Without a config, the architecture, tokenizer and scheduler are SD 1.5's.
/// </summary>
public sealed record SingleFileOptions
{
    /// <summary>
    /// A folder in the diffusers layout whose config files describe the checkpoint (<c>unet/config.json</c>,
    /// <c>vae/config.json</c>, <c>text_encoder/config.json</c>, and, when present, <c>scheduler/scheduler_config.json</c>
    /// and <c>tokenizer/</c>), like diffusers' <c>config=</c>. Weights in that folder are not read.
    /// </summary>
    public string? ConfigDirectory { get; init; }

    /// <summary>The original LDM inference yaml (<c>v1-inference.yaml</c>) the checkpoint was trained with.</summary>
    public string? OriginalConfigFile { get; init; }

    /// <summary>Use the UNet's EMA weights (<c>model_ema.*</c>) when the checkpoint holds both; the regular weights otherwise.</summary>
    public bool UseEmaWeights { get; init; }
}
