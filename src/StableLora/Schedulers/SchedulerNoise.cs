using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// diffusers' <c>randn_tensor</c>: one <c>torch.randn</c> call of the full shape and dtype, on the generator's device
/// when that is the CPU (so a seeded CPU generator gives the same numbers whatever device the model runs on), then moved.
/// Seeding: TorchSharp's <c>new torch.Generator(ulong seed)</c> and <c>Generator.manual_seed(long seed)</c> both take
/// 64 bits, but libtorch's CPU generator (mt19937), like PyTorch's, is seeded with the low 32 bits only: seeds s and
/// s + 2^32 give the same stream, and a seed above 2^63 goes to <c>manual_seed</c> as <c>unchecked((long)seed)</c>.
/// </summary>
internal static class SchedulerNoise
{
    public static torch.Tensor Randn(long[] shape, torch.ScalarType dtype, torch.Device device, torch.Generator? generator)
    {
        if (generator is null || generator.device.type == device.type)
            return torch.randn(shape, dtype, device, generator: generator);
        if (generator.device.type != DeviceType.CPU)
            throw new ArgumentException($"Cannot draw a {device} tensor from a {generator.device} generator; use a CPU generator.", nameof(generator));
        using var onCpu = torch.randn(shape, dtype, torch.CPU, generator: generator);
        return onCpu.to(device);
    }

    public static torch.Tensor RandnLike(torch.Tensor like, torch.Generator? generator) =>
        Randn(like.shape, like.dtype, like.device, generator);
}
