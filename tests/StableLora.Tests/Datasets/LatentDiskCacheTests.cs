using System.Security.Cryptography;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Datasets;

/// <summary>
/// Latents cached on disk (sd-scripts' cache_latents_to_disk): a second run reads them instead of encoding and trains
/// to the same bits, an edited image or another resolution is encoded again, a damaged cache file is rebuilt, and flips
/// are their own entries.
/// </summary>
public sealed class LatentDiskCacheTests
{
    [Fact]
    public async Task ASecondRunReadsTheCacheAndAChangedImageIsEncodedAgain()
    {
        using var temp = new TempDirectory();
        var random = new Random(5);
        foreach (var name in new[] { "a", "b", "c" })
            TestFiles.WriteNoise(temp.File($"data/{name}.png"), 36, 32, random);

        var first = await Train(temp, "first", cacheDirectory: temp.File("cache"));
        Assert.Equal((0, 3), first.Counts);
        Assert.Equal(3, Directory.GetFiles(temp.File("cache"), "*.latents.safetensors").Length);

        var second = await Train(temp, "second", cacheDirectory: temp.File("cache"));
        Assert.Equal((3, 0), second.Counts);
        Assert.Equal(TestFiles.Hash(first.Kohya), TestFiles.Hash(second.Kohya));
        var inMemory = await Train(temp, "memory", cacheDirectory: null, toDisk: false);
        Assert.Equal(TestFiles.Hash(first.Kohya), TestFiles.Hash(inMemory.Kohya));

        TestFiles.WriteNoise(temp.File("data/b.png"), 36, 32, new Random(99));
        var edited = await Train(temp, "edited", cacheDirectory: temp.File("cache"));
        Assert.Equal((2, 1), edited.Counts);

        var otherResolution = await Train(temp, "resolution", cacheDirectory: temp.File("cache"), resolution: 16);
        Assert.Equal((0, 3), otherResolution.Counts);

        // A file cut short by a kill (or any damage) is encoded again, not an error.
        string victim = Directory.GetFiles(temp.File("cache"), "*.latents.safetensors")[0];
        var bytes = File.ReadAllBytes(victim);
        File.WriteAllBytes(victim, bytes[..(bytes.Length / 2)]);
        var repaired = await Train(temp, "repaired", cacheDirectory: temp.File("cache"), resolution: 16);
        Assert.Equal((2, 1), repaired.Counts);
    }

    [Fact]
    public async Task BesideTheImagesWithFlipsAsTheirOwnEntries()
    {
        using var temp = new TempDirectory();
        var random = new Random(8);
        TestFiles.WriteNoise(temp.File("data/a.png"), 32, 32, random);
        TestFiles.WriteNoise(temp.File("data/b.jpg"), 32, 40, random);

        var first = await Train(temp, "first", cacheDirectory: null, flip: true, steps: 6);
        Assert.True(first.Counts.Encoded is 3 or 4, $"{first.Counts}");
        Assert.True(File.Exists(temp.File("data/a.png.latents.safetensors")) || File.Exists(temp.File("data/a.png.latents-flipped.safetensors")));
        var files = Directory.GetFiles(temp.File("data"), "*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(first.Counts.Encoded, files.Count);
        Assert.All(files, f => Assert.Matches(@"^(a\.png|b\.jpg)\.latents(-flipped)?\.safetensors$", f!));

        var second = await Train(temp, "second", cacheDirectory: null, flip: true, steps: 6);
        Assert.Equal((first.Counts.Encoded, 0), second.Counts);
        Assert.Equal(TestFiles.Hash(first.Kohya), TestFiles.Hash(second.Kohya));
    }

    [Fact]
    public void RandomCropsCannotBeCached()
    {
        var errors = new LoraTrainingOptions { Model = "m", DataDirectory = ".", OutputDirectory = "o", CacheLatentsToDisk = true, RandomCrop = true, LatentCacheDirectory = null }
            .Validate(false).Select(e => e.Option).ToList();
        Assert.Contains(nameof(LoraTrainingOptions.CacheLatentsToDisk), errors);
        Assert.Contains(nameof(LoraTrainingOptions.LatentCacheDirectory),
            new LoraTrainingOptions { Model = "m", DataDirectory = ".", OutputDirectory = "o", LatentCacheDirectory = "c" }.Validate(false).Select(e => e.Option));
    }

    private static async Task<(string Kohya, (int Reused, int Encoded) Counts)> Train(TempDirectory temp, string output, string? cacheDirectory, bool toDisk = true,
        int resolution = 24, bool flip = false, int steps = 4)
    {
        var logger = new ListLogger();
        var builder = LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = temp.File("data"), OutputDirectory = temp.File(output), Resolution = resolution, BatchSize = 2, MaxSteps = steps, WarmupSteps = 0,
                CheckpointEvery = 0, Device = "cpu", Seed = 13, RandomFlip = flip, CacheLatents = !toDisk,
            })
            .WithLogger(logger);
        if (toDisk)
            builder = builder.WithLatentCachingToDisk(cacheDirectory);
        var result = await builder.Build().TrainAsync();
        var summary = logger.Entries.Select(e => e.Message).SingleOrDefault(m => m.StartsWith("Latent cache:", StringComparison.Ordinal));
        if (!toDisk)
            return (result.KohyaWeightsPath, (0, 0));
        Assert.NotNull(summary);
        var numbers = System.Text.RegularExpressions.Regex.Matches(summary!, @"\d+").Select(m => int.Parse(m.Value, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        return (result.KohyaWeightsPath, (numbers[0], numbers[1]));
    }
}
