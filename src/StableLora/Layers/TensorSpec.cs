using TorchSharp;

namespace StableLora.Layers;

/// <summary>
/// Where and in what element type a model's parameters are created. Parameters start uninitialised (no random
/// init cost, no second copy): they are filled by loading weights or by <see cref="ModelInitializer"/>.
/// </summary>
internal sealed record TensorSpec(torch.Device Device, torch.ScalarType DType)
{
    public static TensorSpec CpuFloat32 { get; } = new(torch.CPU, torch.ScalarType.Float32);

    public TorchSharp.Modules.Parameter NewParameter(params long[] shape) =>
        new(torch.empty(shape, DType, Device), requires_grad: true);
}
