using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>
/// How StableLora convolves (square kernels, equal stride and padding on both axes): libtorch's convolution, or on
/// the CPU one matrix product over unfolded patches. The product is taken for small feature maps, where it is faster,
/// and for every CPU map when the kernel guard (<see cref="Kernels.CpuKernelGuard"/>) found libtorch's convolution
/// wrong on this CPU and could not turn its oneDNN kernels off.
/// </summary>
internal static class CpuConvolution
{
    /// <summary>
    /// Feature maps up to this many pixels are convolved on the CPU as one matrix product over unfolded patches.
    /// libtorch 2.10's CPU convolution (oneDNN) is slow on small maps with many channels: SD 1.5's 1280-channel
    /// 3x3 convolution on 8x8 takes 78 ms forward where the matrix product takes 21 ms (and 116 against 47 ms with
    /// backward); from 16x16 on both take the same time. docs/benchmarks.md has the measurements.
    /// </summary>
    public const long SmallMapPixels = 100;

    private static volatile bool _matrixProductEverywhere;

    /// <summary>Whether every CPU convolution, whatever its map size, runs as a matrix product (the guard's last resort).</summary>
    public static bool MatrixProductEverywhere
    {
        get => _matrixProductEverywhere;
        set => _matrixProductEverywhere = value;
    }

    /// <summary>The convolution of a [B, C, H, W] input by a [O, C, k, k] weight.</summary>
    public static Tensor Forward(Tensor input, Tensor weight, Tensor? bias, long stride, long padding)
    {
        long kernel = weight.shape[2];
        bool cpu = input.device_type == TorchSharp.DeviceType.CPU && input.dim() == 4;
        bool product = cpu && (_matrixProductEverywhere || (kernel > 1 && input.shape[2] * input.shape[3] <= SmallMapPixels));
        return product
            ? AsMatrixProduct(input, weight, bias, stride, padding)
            : nn.functional.conv2d(input, weight, bias, new[] { stride, stride }, new[] { padding, padding });
    }

    /// <summary>The convolution as unfold + matrix product, which goes through no convolution kernel.</summary>
    public static Tensor AsMatrixProduct(Tensor input, Tensor weight, Tensor? bias, long stride, long padding)
    {
        using var scope = NewDisposeScope();
        long outChannels = weight.shape[0];
        long kernel = weight.shape[2];
        long height = (input.shape[2] + 2 * padding - kernel) / stride + 1;
        long width = (input.shape[3] + 2 * padding - kernel) / stride + 1;
        var patches = nn.functional.unfold(input, kernel, padding: padding, stride: stride);
        var product = weight.reshape(outChannels, -1).matmul(patches);
        if (bias is not null)
            product = product.PlusInPlace(bias.view(1, outChannels, 1));
        return product.view(input.shape[0], outChannels, height, width).MoveToOuterDisposeScope();
    }
}
