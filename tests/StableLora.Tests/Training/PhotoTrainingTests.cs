using System.Security.Cryptography;
using StableLora.Tests.Infrastructure;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// Training on ordinary photos (mixed sizes, aspect ratios, JPEG and PNG, grayscale, palette and alpha) gives the same
/// finite LoRA in every run, whatever the memory held before: a kernel that reads memory it never wrote (libtorch's
/// oneDNN convolution on AMD Zen 5) made such runs differ and go NaN at random.
/// </summary>
public sealed class PhotoTrainingTests(ITestOutputHelper output)
{
    private static string Photos => Path.Combine(FixturePaths.Root, "photos");

    private static LoraTrainingBuilder OnPhotos(string outputDirectory) =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(Photos)
            .WithCaption("a photo")
            .WithResolution(64)
            .WithBatchSize(2)
            .WithWarmupSteps(2)
            .WithMaxSteps(5)
            .WithCheckpointEvery(0)
            .WithDevice("cpu")
            .WithSeed(11)
            .WithOutputDirectory(outputDirectory);

    [Fact]
    public async Task RepeatedRunsOnPhotosGiveTheSameFiniteLoraBitForBit()
    {
        Assert.Equal(10, Directory.GetFiles(Photos).Count(f => !f.EndsWith(".md", StringComparison.Ordinal)));
        using var temp = new TempDirectory();
        var hashes = new List<string>();
        for (int run = 0; run < 3; run++)
        {
            PoisonFreedMemory(run);
            var losses = new List<double>();
            var result = await OnPhotos(temp.File($"run{run}")).WithProgress(new SynchronousProgress<TrainingProgress>(p => losses.Add(p.Loss))).Build().TrainAsync();
            output.WriteLine($"run {run}: losses {string.Join(", ", losses.Select(l => l.ToString("G6")))}");
            Assert.All(losses, l => Assert.True(double.IsFinite(l), $"run {run}: a loss is not finite"));
            Assert.All(losses, l => Assert.True(l > 0));
            NonFiniteGuardTests.AssertEveryTensorFinite(temp.File($"run{run}"));
            hashes.Add(Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(result.LoraPath))));
        }

        Assert.All(hashes, h => Assert.Equal(hashes[0], h));
    }

    /// <summary>Frees buffers full of NaN (different sizes each run), so memory handed out next holds NaN.</summary>
    private static void PoisonFreedMemory(int run)
    {
        using var nan = float.NaN.ToScalar();
        var buffers = new List<Tensor>();
        for (long elements = 1 << 8; elements <= 1 << 22; elements = elements * 3 / 2 + run)
            buffers.Add(full(new[] { elements }, nan));
        foreach (var buffer in buffers)
            buffer.Dispose();
    }
}
