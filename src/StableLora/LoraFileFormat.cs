namespace StableLora;

/// <summary>The LoRA file layouts StableLora reads and writes.</summary>
public enum LoraFileFormat
{
    /// <summary>
    /// diffusers' attention-processor <c>lora_weights.pt</c>: a PyTorch state dict of diffusers' <c>AttnProcsLayers</c>
    /// (<c>...attn1.processor.to_q_lora.down.weight</c>), readable by Python's <c>torch.load</c>.
    /// </summary>
    AttnProcs,

    /// <summary>kohya-ss / AUTOMATIC1111 / ComfyUI <c>.safetensors</c> (<c>lora_unet_..._to_q.lora_down.weight</c>, <c>.alpha</c>, <c>ss_*</c> metadata).</summary>
    Kohya,

    /// <summary>diffusers / PEFT <c>pytorch_lora_weights.safetensors</c> (<c>unet....to_q.lora_A.weight</c>, <c>lora_B.weight</c>).</summary>
    Peft,

    /// <summary>diffusers' pre-PEFT <c>pytorch_lora_weights</c> naming (<c>unet....to_q.lora.down.weight</c>); read only.</summary>
    DiffusersLegacy,
}
