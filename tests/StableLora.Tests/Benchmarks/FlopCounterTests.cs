using StableLora.Layers;
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
        using (FlopCounter.Start(out var total))
        {
            linear.forward(zeros(5, 16));
            Assert.Equal(2 * 5 * 8 * 16, total());
            conv.forward(zeros(2, 3, 10, 10));
            Assert.Equal(2 * 5 * 8 * 16 + 2L * (2 * 4 * 10 * 10) * 3 * 3 * 3, total());
        }
    }
}
