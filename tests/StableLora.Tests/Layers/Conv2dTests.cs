using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Layers;

/// <summary>The CPU's matrix-product path for small feature maps computes what libtorch's convolution computes.</summary>
public sealed class Conv2dTests
{
    private static readonly Tolerance FloatRounding = new(Abs: 1e-5, Rel: 1e-5);

    [Theory]
    [InlineData(8, 8, 1, 1)]   // SD 1.5's deepest maps at 512 px
    [InlineData(7, 5, 2, 1)]   // a downsampler on an odd map
    [InlineData(10, 10, 1, 0)] // the largest map the path takes, unpadded
    public void SmallMapsGiveTheConvolutionAndItsGradientsWithinFloatRounding(long height, long width, long stride, long padding)
    {
        using var scope = NewDisposeScope();
        Assert.True(height * width <= StableLora.Layers.Conv2d.SmallMapPixels);
        var conv = new StableLora.Layers.Conv2d(24, 40, 3, StableLora.Layers.TensorSpec.CpuFloat32, stride, padding);
        using (no_grad())
        {
            conv.Weight.copy_(randn(conv.Weight.shape).mul_(0.1));
            conv.Bias!.copy_(randn(conv.Bias.shape));
        }

        var input = randn(2, 24, height, width).requires_grad_(true);
        var output = conv.forward(input);
        var upstream = randn(output.shape);
        output.backward(new[] { upstream });
        var inputGrad = input.grad!.clone();
        var weightGrad = conv.Weight.grad!.clone();

        var plainInput = input.detach().clone().requires_grad_(true);
        var plainWeight = conv.Weight.detach().clone().requires_grad_(true);
        var plain = nn.functional.conv2d(plainInput, plainWeight, conv.Bias!.detach(), new[] { stride, stride }, new[] { padding, padding });
        plain.backward(new[] { upstream });

        Assert.Equal(plain.shape, output.shape);
        TensorAssert.Close(plain.detach(), output.detach(), FloatRounding, "output");
        TensorAssert.Close(plainInput.grad!, inputGrad, FloatRounding, "input gradient");
        TensorAssert.Close(plainWeight.grad!, weightGrad, FloatRounding, "weight gradient");
    }
}
