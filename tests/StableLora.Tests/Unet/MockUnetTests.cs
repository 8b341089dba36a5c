using System.Diagnostics;
using StableLora.Layers;
using StableLora.Tests.Infrastructure;
using StableLora.Unet;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace StableLora.Tests.Unet;

public sealed class MockUnetTests(ITestOutputHelper output)
{
    [Fact]
    public void TinyUnetFromConfigRunsForwardAndBackwardWithGradientsForEveryParameter()
    {
        using var scope = NewDisposeScope();
        var watch = Stopwatch.StartNew();
        using var unet = ModelInitializer.InitializeRandom(new UNet2DConditionModel(TinyConfigs.Unet, TensorSpec.CpuFloat32), seed: 1);
        unet.train();
        using var generator = new Generator(7);
        var sample = randn(new long[] { 2, 4, 8, 8 }, generator: generator);
        var context = randn(new long[] { 2, 5, 8 }, generator: generator);
        var prediction = unet.Forward(sample, tensor(new long[] { 3, 900 }), context);
        Assert.Equal(sample.shape, prediction.shape);
        nn.functional.mse_loss(prediction, zeros_like(prediction)).backward();
        watch.Stop();
        output.WriteLine($"tiny UNet ({unet.parameters().Sum(p => p.numel())} parameters): build + forward + backward in {watch.Elapsed.TotalMilliseconds:F0} ms");

        foreach (var (name, parameter) in unet.named_parameters())
        {
            Assert.True(parameter.grad is not null, $"{name} has no gradient");
            Assert.True(parameter.grad!.isfinite().all().item<bool>(), $"{name} has a non-finite gradient");
        }
    }

    [Fact]
    public void RandomInitialisationIsDeterministicPerSeed()
    {
        using var scope = NewDisposeScope();
        using var first = ModelInitializer.InitializeRandom(new UNet2DConditionModel(TinyConfigs.Unet, TensorSpec.CpuFloat32), seed: 5);
        using var second = ModelInitializer.InitializeRandom(new UNet2DConditionModel(TinyConfigs.Unet, TensorSpec.CpuFloat32), seed: 5);
        using var other = ModelInitializer.InitializeRandom(new UNet2DConditionModel(TinyConfigs.Unet, TensorSpec.CpuFloat32), seed: 6);
        var a = StateDicts.Ordered(first);
        var b = StateDicts.Ordered(second);
        var c = StateDicts.Ordered(other);
        for (int i = 0; i < a.Count; i++)
            TensorAssert.Identical(a[i].Value, b[i].Value, a[i].Key);
        Assert.False(TensorAssert.BitEqual(a[0].Value, c[0].Value));
    }
}
