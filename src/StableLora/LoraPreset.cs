namespace StableLora;

/// <summary>Which UNet layers a new LoRA adapts.</summary>
public enum LoraPreset
{
    /// <summary>
    /// diffusers' attention-processor LoRA: <c>to_q</c>, <c>to_k</c>, <c>to_v</c> and <c>to_out.0</c> of every
    /// UNet attention (narrowed by <see cref="LoraTargets"/> and <see cref="LoraAttentionKinds"/>); 128 modules on SD 1.5.
    /// Down starts ~ N(0, 1/rank). The only preset <c>lora_weights.pt</c> (diffusers' attention-processor format) can hold.
    /// </summary>
    Attention,

    /// <summary>
    /// kohya-ss/sd-scripts' default: every Linear and 1x1 convolution inside each Transformer2DModel (<c>proj_in</c>,
    /// <c>proj_out</c>, the attentions' projections, <c>ff.net.0.proj</c>, <c>ff.net.2</c>); 192 modules on SD 1.5. Down
    /// starts Kaiming-uniform as kohya's does.
    /// </summary>
    Kohya,
}
