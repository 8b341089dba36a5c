namespace StableLora;

/// <summary>The precision of the frozen models during training. LoRA weights, optimizer state and the loss stay in float32.</summary>
public enum MixedPrecision
{
    /// <summary>Everything in float32 (the only choice that is bit-reproducible on CPU).</summary>
    No,

    /// <summary>UNet and text encoder in float16 with dynamic loss scaling (the VAE stays float32 unless asked otherwise: SD's VAE overflows in fp16).</summary>
    Fp16,

    /// <summary>UNet, text encoder and VAE in bfloat16 (needs hardware with bf16 support); no loss scaling needed.</summary>
    Bf16,
}
