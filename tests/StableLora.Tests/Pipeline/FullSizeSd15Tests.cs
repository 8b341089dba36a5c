using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace StableLora.Tests.Pipeline;

/// <summary>
/// The same code handles a full-size SD 1.5: random weights are written as a diffusers folder, loaded back through
/// the normal loader, and the UNet runs once at 64x64 latents (512 px). Long-running (about a minute on 2 cores);
/// its time and memory are reported, not asserted (the figures go to docs/benchmarks.md).
/// </summary>
[Trait("Category", "LongRunning")]
public sealed class FullSizeSd15Tests(ITestOutputHelper output)
{
    [Fact]
    public void Sd15ArchitectureRoundTripsThroughADiffusersFolderAndRuns()
    {
        using var temp = new TempDirectory();
        string folder = Path.Combine(temp.Path, "sd15-random");
        var expectedSums = new Dictionary<string, double>();
        var watch = Stopwatch.StartNew();

        using (var unet = ModelInitializer.InitializeRandom(new UNet2DConditionModel(Sd15Presets.Unet, TensorSpec.CpuFloat32), seed: 15))
        {
            Assert.Equal(859_520_964, unet.parameters().Sum(p => p.numel()));
            foreach (var (name, tensor) in StateDicts.Ordered(unet))
                expectedSums[name] = Sum(tensor);
            DiffusersFolderWriter.WriteComponent(Path.Combine(folder, "unet"), Sd15Presets.Json("unet"), unet);
        }

        using (var vae = ModelInitializer.InitializeRandom(new AutoencoderKL(Sd15Presets.Vae, TensorSpec.CpuFloat32), seed: 16))
            DiffusersFolderWriter.WriteComponent(Path.Combine(folder, "vae"), Sd15Presets.Json("vae"), vae);
        using (var textEncoder = ModelInitializer.InitializeRandom(new ClipTextModel(Sd15Presets.TextEncoder, TensorSpec.CpuFloat32), seed: 17))
            DiffusersFolderWriter.WriteComponent(Path.Combine(folder, "text_encoder"), Sd15Presets.Json("text_encoder"), textEncoder, transformersNaming: true);
        DiffusersFolderWriter.WriteModelIndex(folder);
        output.WriteLine($"built random SD 1.5 and wrote it in {watch.Elapsed.TotalSeconds:F1} s");

        var settings = new ComponentLoadSettings(CPU, ScalarType.Float32, null, NullLogger.Instance);
        watch.Restart();
        using var loaded = ComponentLoader.LoadUnet(Path.Combine(folder, "unet"), settings);
        using (var vae = ComponentLoader.LoadVae(Path.Combine(folder, "vae"), settings))
        using (var textEncoder = ComponentLoader.LoadTextEncoder(Path.Combine(folder, "text_encoder"), settings))
            output.WriteLine($"loaded UNet, VAE and text encoder in {watch.Elapsed.TotalSeconds:F1} s");

        foreach (var (name, tensor) in StateDicts.Ordered(loaded))
            Assert.Equal(expectedSums[name], Sum(tensor));

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var generator = new Generator(3);
        var latents = randn(new long[] { 1, 4, 64, 64 }, generator: generator);
        var context = randn(new long[] { 1, 77, 768 }, generator: generator);
        watch.Restart();
        var prediction = loaded.Forward(latents, tensor(500L), context);
        watch.Stop();
        Assert.Equal(latents.shape, prediction.shape);
        Assert.True(prediction.isfinite().all().item<bool>());
        output.WriteLine($"UNet forward, 1x4x64x64 fp32 on CPU: {watch.Elapsed.TotalSeconds:F2} s; process peak RSS {PeakRssGiB():F2} GiB");
    }

    private static double Sum(TorchSharp.torch.Tensor tensor)
    {
        using var scope = NewDisposeScope();
        return tensor.to(ScalarType.Float64).sum().item<double>();
    }

    private static double PeakRssGiB()
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return line is null ? double.NaN : long.Parse(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0 / 1024.0;
    }
}
