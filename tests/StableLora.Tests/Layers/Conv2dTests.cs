using StableLora.Layers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Layers;

/// <summary>
/// StableLora's convolution (libtorch's, or the matrix product on small CPU maps) and its gradients equal the same
/// convolution computed in float64 as unfold + matrix product, which goes through no convolution kernel.
/// </summary>
public sealed class Conv2dTests
{
    private static readonly Tolerance FloatRounding = new(Abs: 1e-5, Rel: 1e-5);

    /// <summary>A weight gradient sums batch x height x width products; its rounding is measured against its scale.</summary>
    private const double SumRounding = 1e-5;

    [Theory]
    [InlineData(8, 8, 1, 1, 3)]    // SD 1.5's deepest maps at 512 px (matrix-product path)
    [InlineData(7, 5, 2, 1, 3)]    // a downsampler on an odd map
    [InlineData(10, 10, 1, 0, 3)]  // the largest map the matrix-product path takes, unpadded
    [InlineData(16, 12, 1, 1, 3)]  // libtorch's convolution
    [InlineData(17, 17, 2, 1, 3)]  // libtorch's convolution, strided
    [InlineData(12, 12, 1, 0, 1)]  // a 1x1 convolution
    public void TheConvolutionAndItsGradientsEqualTheFloat64Reference(long height, long width, long stride, long padding, long kernel)
    {
        using var scope = NewDisposeScope();
        var conv = new Conv2d(24, 40, kernel, TensorSpec.CpuFloat32, stride, padding);
        using (no_grad())
        {
            conv.Weight.copy_(randn(conv.Weight.shape).mul_(0.1));
            conv.Bias!.copy_(randn(conv.Bias.shape));
        }

        var input = randn(2, 24, height, width).requires_grad_(true);
        var output = conv.forward(input);
        var upstream = randn(output.shape);
        output.backward(new[] { upstream });

        var referenceInput = input.detach().to(float64).requires_grad_(true);
        var referenceWeight = conv.Weight.detach().to(float64).requires_grad_(true);
        var reference = CpuConvolution.AsMatrixProduct(referenceInput, referenceWeight, conv.Bias!.detach().to(float64), stride, padding);
        reference.backward(new[] { upstream.to(float64) });

        long outHeight = (height + 2 * padding - kernel) / stride + 1;
        long outWidth = (width + 2 * padding - kernel) / stride + 1;
        Assert.Equal(new[] { 2L, 40, outHeight, outWidth }, output.shape);
        TensorAssert.Close(reference.detach(), output.detach(), FloatRounding, "output");
        TensorAssert.Close(referenceInput.grad!, input.grad!, FloatRounding, "input gradient");
        TensorAssert.CloseToScale(referenceWeight.grad!, conv.Weight.grad!, SumRounding, "weight gradient");
    }
}
