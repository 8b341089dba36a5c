using StableLora.Data;
using StableLora.Tests.Infrastructure;
using StableLora.Training;

namespace StableLora.Tests.Training;

/// <summary>Cancellation behaves the same everywhere: before the start nothing happens; midway a checkpoint is saved and the final files are left alone.</summary>
public sealed class CancellationTests
{
    private static LoraTrainingBuilder Tiny(TempDirectory temp) =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(Sketches(temp))
            .WithResolution(16)
            .WithBatchSize(2)
            .WithMaxSteps(6)
            .WithCheckpointEvery(0)
            .WithDevice("cpu")
            .WithOutputDirectory(temp.File("output"));

    private static string Sketches(TempDirectory temp)
    {
        string directory = temp.File("sketches");
        if (!Directory.Exists(directory))
            SketchImageGenerator.Generate(directory, count: 4, size: 24, seed: 3);
        return directory;
    }

    [Fact]
    public async Task AnAlreadyCancelledTokenStopsTheRunBeforeAnythingIsLoadedOrWritten()
    {
        using var temp = new TempDirectory();
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var loaded = false;
        var trainer = Tiny(temp).WithHooks(new TrainingHooks { ModelLoaded = _ => loaded = true }).Build();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => trainer.TrainAsync(cancelled.Token));
        Assert.False(loaded);
        Assert.False(Directory.Exists(temp.File("output")));
    }

    [Fact]
    public async Task CancelledMidwayTheRunSavesACheckpointAndLeavesTheFinalFilesAsTheyWere()
    {
        using var temp = new TempDirectory();
        Directory.CreateDirectory(temp.File("output"));
        File.WriteAllText(temp.File("output/lora_weights.pt"), "an earlier run's LoRA");
        using var cancellation = new CancellationTokenSource();
        var result = await Tiny(temp).WithObserver(new CancelAt(3, cancellation)).Build().TrainAsync(cancellation.Token);

        Assert.True(result.Cancelled);
        Assert.Equal(3, result.StepsCompleted);
        Assert.Equal("an earlier run's LoRA", File.ReadAllText(temp.File("output/lora_weights.pt")));
        Assert.False(File.Exists(temp.File("output/lora_kohya.safetensors")));
        string checkpoint = temp.File("output/checkpoint-step-3");
        Assert.Equal(Path.Combine(checkpoint, "lora_weights.pt"), result.LoraPath);
        Assert.Equal(Path.Combine(checkpoint, "lora_kohya.safetensors"), result.KohyaWeightsPath);
        using var seedFormat = LoraWeights.Load(result.LoraPath);
        using var kohya = LoraWeights.Load(result.KohyaWeightsPath);
        Assert.Equal(seedFormat.ModuleCount, kohya.ModuleCount);
        Assert.Equal("3", StableLora.IO.SafetensorsReader.ReadMetadata(result.KohyaWeightsPath)["ss_steps"]);
    }
}
