using StableLora.Benchmarks;
using StableLora.Layers;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.TextEncoder;
using static TorchSharp.torch;

namespace StableLora.Tests.Benchmarks;

/// <summary>The FLOP counts behind the benchmarks' "fraction of peak" column, counted as torch.utils.flop_counter counts them.</summary>
public sealed class FlopCounterTests
{
    [Fact]
    public void LinearAndConvolutionCountTwoFlopsPerMultiplyAdd()
    {
        using var scope = NewDisposeScope();
        var linear = new Linear(16, 8, hasBias: true, TensorSpec.CpuFloat32);
        var conv = new Conv2d(3, 4, 3, TensorSpec.CpuFloat32, padding: 1);
        var strided = new Conv2d(3, 4, 3, TensorSpec.CpuFloat32, stride: 2);
        using var counter = FlopCounter.Attach(linear, conv, strided);
        var output = linear.forward(zeros(5, 16));
        Assert.Equal(2 * 5 * 8 * 16, counter.Flops);
        conv.forward(zeros(2, 3, 10, 10));
        Assert.Equal(2 * 5 * 8 * 16 + 2L * (2 * 4 * 10 * 10) * 3 * 3 * 3, counter.Flops);
        var stridedOutput = strided.forward(zeros(2, 3, 10, 10));
        Assert.Equal(new long[] { 2, 4, 4, 4 }, stridedOutput.shape);
        Assert.Equal(2 * 5 * 8 * 16 + 2L * (2 * 4 * 10 * 10) * 3 * 3 * 3 + 2L * stridedOutput.NumberOfElements * 3 * 3 * 3, counter.Flops);
        Assert.Equal(new long[] { 5, 8 }, output.shape);
    }

    [Fact]
    public void TheTextEncodersCountIsItsMatrixProductsByHand()
    {
        // Per layer of CLIP: q, k, v and out projections (4 x 2BTd^2), scores and weighted values (2 x 2BT^2d), the MLP (2 x 2BTdm).
        using var scope = NewDisposeScope();
        using var model = TextEncoderParityTests.LoadFixtureTextEncoder();
        var config = model.Config;
        long b = 2, t = 77, d = config.HiddenSize, m = config.IntermediateSize;
        long expected = config.NumHiddenLayers * (8 * b * t * d * d + 4 * b * t * t * d + 4 * b * t * d * m);
        using var noGrad = no_grad();
        using var counter = FlopCounter.Attach(model);
        model.Forward(ones(new long[] { b, t }, ScalarType.Int64));
        Assert.Equal(expected, counter.Flops);
    }

    [Fact]
    public void DetachingLeavesTheLayersAsTheyWere()
    {
        using var scope = NewDisposeScope();
        var linear = new Linear(4, 4, hasBias: false, TensorSpec.CpuFloat32);
        using (FlopCounter.Attach(linear))
            Assert.False(linear.Adapters.IsEmpty);
        Assert.True(linear.Adapters.IsEmpty);
    }
}
