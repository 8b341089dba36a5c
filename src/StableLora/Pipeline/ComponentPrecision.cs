using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>
/// The dtypes a model is loaded in, resolved once for training (<see cref="MixedPrecision"/>) and generation
/// (<see cref="ModelDType"/>): the UNet and text encoder in <see cref="Model"/>, the VAE in <see cref="Vae"/> (float32
/// beside float16 when asked, since SD's VAE overflows in float16).
/// </summary>
internal readonly record struct ComponentPrecision(ScalarType Model, ScalarType Vae)
{
    /// <summary>Resolves <paramref name="dtype"/> on <paramref name="device"/>; bfloat16 on a device that cannot compute in it is an error naming <paramref name="option"/>.</summary>
    public static ComponentPrecision Resolve(ModelDType dtype, bool vaeInFloat32, Device device, string option)
    {
        switch (dtype)
        {
            case ModelDType.BFloat16:
                if (!DeviceSpec.SupportsBFloat16(device))
                    throw new InvalidOptionsException(option, dtype, $"device {device} does not compute in bfloat16; use float16 or float32");
                return new(ScalarType.BFloat16, ScalarType.BFloat16);
            case ModelDType.Float16:
                return new(ScalarType.Float16, vaeInFloat32 ? ScalarType.Float32 : ScalarType.Float16);
            default:
                return new(ScalarType.Float32, ScalarType.Float32);
        }
    }

    /// <summary>Training's mixed precision as the dtype its frozen weights are loaded in.</summary>
    public static ModelDType For(MixedPrecision precision) => precision switch
    {
        MixedPrecision.Bf16 => ModelDType.BFloat16,
        MixedPrecision.Fp16 => ModelDType.Float16,
        _ => ModelDType.Float32,
    };
}
