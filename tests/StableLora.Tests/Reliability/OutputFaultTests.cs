using StableLora.Data;
using StableLora.Samples.Cli;
using StableLora.Tests.Infrastructure;
using StableLora.Training;

namespace StableLora.Tests.Reliability;

/// <summary>
/// The output folder fills up or turns read-only while training saves: a clear <see cref="OutputSaveException"/>
/// naming the folder and the intact checkpoint, every checkpoint already written still complete, and a resume (once
/// there is room again) that ends with the LoRA of a run that never failed, byte for byte.
/// </summary>
public sealed class OutputFaultTests
{
    private const int MaxSteps = 6;

    private static LoraTrainingBuilder Tiny(TempDirectory temp, string output) =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(Sketches(temp))
            .WithResolution(16)
            .WithBatchSize(2)
            .WithLearningRate(1e-3)
            .WithMaxSteps(MaxSteps)
            .WithWarmupSteps(2)
            .WithCheckpointEvery(1)
            .WithDevice("cpu")
            .WithSeed(17)
            .WithOutputDirectory(output);

    private static string Sketches(TempDirectory temp)
    {
        string directory = temp.File("sketches");
        if (!Directory.Exists(directory))
            SketchImageGenerator.Generate(directory, count: 4, size: 24, seed: 9);
        return directory;
    }

    [TmpfsFact]
    public async Task AFullDiskStopsTheRunNamingTheIntactCheckpointAndResumingWithRoomEqualsTheStraightRun()
    {
        using var temp = new TempDirectory();
        var straight = await Tiny(temp, temp.File("straight/output")).Build().TrainAsync();

        // Room for about two checkpoints (each about 0.6 MB for the tiny model).
        using var disk = TmpfsMount.Create(temp.File("full/output"), "1400k");
        var error = await Assert.ThrowsAsync<OutputSaveException>(() => Tiny(temp, disk.Path).Build().TrainAsync());
        Assert.Contains("No space left on device", error.Message, StringComparison.Ordinal);
        AssertFailedAfterAnIntactCheckpoint(error, disk.Path);

        disk.Resize("64m");
        var resumed = await Tiny(temp, disk.Path).WithResume("latest").Build().TrainAsync();
        Assert.Equal(File.ReadAllBytes(straight.LoraPath), File.ReadAllBytes(resumed.LoraPath));
    }

    [TmpfsFact]
    public async Task AFolderTurnedReadOnlyMidRunStopsItNamingTheIntactCheckpointAndResumingEqualsTheStraightRun()
    {
        using var temp = new TempDirectory();
        var straight = await Tiny(temp, temp.File("straight/output")).Build().TrainAsync();

        using var disk = TmpfsMount.Create(temp.File("ro/output"), "64m");
        var error = await Assert.ThrowsAsync<OutputSaveException>(() =>
            Tiny(temp, disk.Path).WithObserver(new ReadOnlyAfter(3, disk)).Build().TrainAsync());
        Assert.Equal(4, error.Step);
        Assert.Contains("Read-only file system", error.Message, StringComparison.Ordinal);
        AssertFailedAfterAnIntactCheckpoint(error, disk.Path);

        disk.MakeWritable();
        var resumed = await Tiny(temp, disk.Path).WithResume("latest").Build().TrainAsync();
        Assert.Equal(File.ReadAllBytes(straight.LoraPath), File.ReadAllBytes(resumed.LoraPath));
    }

    [TmpfsFact]
    public async Task TheCliExitsWithFiveAndOneLineNamingTheFolder()
    {
        using var temp = new TempDirectory();
        using var disk = TmpfsMount.Create(temp.File("ro/output"), "1m");
        disk.MakeReadOnly();
        var originalError = Console.Error;
        using var captured = new StringWriter();
        Console.SetError(captured);
        int code;
        try
        {
            code = await Cli.MainAsync(["train", "--model", FixturePaths.TinyPipeline, "--data", Sketches(temp), "--output", disk.Path,
                "--resolution", "16", "--max-steps", "3", "--checkpoint-every", "1", "--device", "cpu"]);
        }
        finally
        {
            Console.SetError(originalError);
        }

        Assert.Equal(ExitCodes.CannotWrite, code);
        string message = captured.ToString();
        Assert.Contains(Path.Combine(disk.Path, "checkpoint-step-1"), message, StringComparison.Ordinal);
        Assert.Contains("Read-only file system", message, StringComparison.Ordinal);
        Assert.Contains("no earlier checkpoint exists", message, StringComparison.Ordinal);
    }

    private static void AssertFailedAfterAnIntactCheckpoint(OutputSaveException error, string output)
    {
        var store = new CheckpointStore(output);
        var checkpoints = store.List();
        Assert.True(error.Step >= 2, $"the first checkpoint should fit; failed at step {error.Step}");
        Assert.Equal(store.PathFor(error.Step), error.Path);
        Assert.Equal(store.PathFor(error.Step - 1), error.LatestCheckpoint);
        Assert.Contains(error.LatestCheckpoint!, error.Message, StringComparison.Ordinal);
        Assert.Equal(Enumerable.Range(1, (int)error.Step - 1).Select(s => (long)s), checkpoints.Select(c => c.Step));
        Assert.False(Directory.Exists(error.Path));
        Assert.Empty(Directory.EnumerateFileSystemEntries(output, ".*")); // no half-written temporaries left behind
        foreach (var (_, path) in checkpoints)
        {
            using var checkpoint = store.Load(path);
            using var lora = LoraWeights.Load(Path.Combine(path, CheckpointStore.LoraFile));
            Assert.True(lora.ModuleCount > 0);
        }
    }

    private sealed class ReadOnlyAfter(long step, TmpfsMount disk) : ITrainingObserver
    {
        public ValueTask OnCheckpointSavedAsync(CheckpointSavedEvent e)
        {
            if (e.Step == step)
                disk.MakeReadOnly();
            return ValueTask.CompletedTask;
        }
    }
}
