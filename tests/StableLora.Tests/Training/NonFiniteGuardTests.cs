using StableLora.Data;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// No step with a non-finite loss or gradient changes the LoRA or the optimizer, too many of them in a row stop the run
/// naming the last good checkpoint, and nothing non-finite is ever written.
/// </summary>
public sealed class NonFiniteGuardTests(ITestOutputHelper output)
{
    private static LoraTrainingBuilder Tiny(TempDirectory temp, int maxSteps) =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(Sketches(temp))
            .WithCaption("a sketch")
            .WithResolution(16)
            .WithBatchSize(2)
            .WithLearningRate(1e-3)
            .WithMaxSteps(maxSteps)
            .WithWarmupSteps(2)
            .WithCheckpointEvery(0)
            .WithDevice("cpu")
            .WithSeed(7)
            .WithOutputDirectory(temp.File("output"));

    private static string Sketches(TempDirectory temp)
    {
        string directory = temp.File("sketches");
        if (!Directory.Exists(directory))
            SketchImageGenerator.Generate(directory, count: 6, size: 24, seed: 3);
        return directory;
    }

    [Fact]
    public async Task NaNGradientsAtStepOneWithLearningRateZeroChangeNoWeightAndNoOptimizerState()
    {
        using var temp = new TempDirectory();
        var logger = new ListLogger();
        List<Tensor>? beforeStepOne = null;
        List<Tensor>? beforeStepTwo = null;
        var hooks = new TrainingHooks
        {
            BeforeOptimizerStep = (step, parameters) =>
            {
                if (step == 1)
                {
                    beforeStepOne = parameters.Select(p => p.detach().clone().DetachFromDisposeScope()).ToList();
                    parameters[5].grad!.view(-1)[0].fill_(float.NaN);
                }
                else if (step == 2)
                {
                    beforeStepTwo = parameters.Select(p => p.detach().clone().DetachFromDisposeScope()).ToList();
                }
            },
        };

        var result = await Tiny(temp, 4).WithCheckpointEvery(1).WithLogger(logger).WithHooks(hooks).Build().TrainAsync();

        Assert.Equal(4, result.StepsCompleted);
        for (int i = 0; i < beforeStepOne!.Count; i++)
            TensorAssert.Identical(beforeStepOne[i], beforeStepTwo![i], $"parameter {i} after the skipped step");
        Assert.Contains(logger.Entries, e => e.Message.Contains("Step 1: a gradient is not finite", StringComparison.Ordinal));
        using var checkpoint = new CheckpointStore(temp.File("output")).Load(Path.Combine(temp.File("output"), "checkpoint-step-1"));
        Assert.Equal(0, checkpoint.State.OptimizerSteps);
        Assert.Equal(0, checkpoint.State.SchedulerSteps);
        AssertEveryTensorFinite(temp.File("output"));
    }

    [Fact]
    public async Task AnFp32OverflowInEveryStepStopsTheRunAfterTheLimitNamingTheLastGoodCheckpoint()
    {
        using var temp = new TempDirectory();
        var hooks = new TrainingHooks { BeforeMicroStep = (step, pixels) => { if (step >= 3) pixels.mul_(1e38f); } };
        var trainer = Tiny(temp, 10).WithCheckpointEvery(2).WithMaxConsecutiveSkippedSteps(3).WithHooks(hooks).Build();

        var error = await Assert.ThrowsAsync<TrainingFailedException>(() => trainer.TrainAsync());

        output.WriteLine(error.Message);
        Assert.Equal(5, error.Step);
        Assert.Equal(2, error.ImageNames.Count);
        // Steps 3 and 4 were skipped, so the checkpoint of step 4 holds step 2's LoRA: it is the last good one.
        string lastGood = Path.Combine(temp.File("output"), "checkpoint-step-4");
        Assert.Equal(Path.GetFullPath(lastGood), Path.GetFullPath(error.LastCheckpoint!));
        Assert.Contains("3 steps in a row were skipped", error.Message, StringComparison.Ordinal);
        Assert.Contains("checkpoint-step-4", error.Message, StringComparison.Ordinal);
        using (var stepTwo = LoraWeights.Load(Path.Combine(temp.File("output"), "checkpoint-step-2", CheckpointStore.LoraFile)))
        using (var stepFour = LoraWeights.Load(Path.Combine(lastGood, CheckpointStore.LoraFile)))
        {
            Assert.Equal(stepTwo.ModuleCount, stepFour.ModuleCount);
            for (int i = 0; i < stepTwo.Modules.Count; i++)
            {
                var (two, four) = ((StableLora.Lora.LoraModuleWeights)stepTwo.Modules[i], (StableLora.Lora.LoraModuleWeights)stepFour.Modules[i]);
                TensorAssert.Identical(two.Down, four.Down, $"module {i} down");
                TensorAssert.Identical(two.Up, four.Up, $"module {i} up");
            }
        }

        Assert.False(File.Exists(Path.Combine(temp.File("output"), "lora_weights.pt")));
        AssertEveryTensorFinite(temp.File("output"));
    }

    [Fact]
    public async Task ALearningRateOf1e12NeverWritesANonFiniteFile()
    {
        using var temp = new TempDirectory();
        var trainer = Tiny(temp, 8).WithLearningRate(1e12).WithWarmupSteps(0).WithCheckpointEvery(1).WithMaxConsecutiveSkippedSteps(2).Build();

        TrainingFailedException? error = null;
        try
        {
            await trainer.TrainAsync();
        }
        catch (TrainingFailedException e)
        {
            error = e;
        }

        output.WriteLine(error?.Message ?? "training finished");
        Assert.NotNull(error);
        Assert.NotNull(error.LastCheckpoint);
        Assert.True(Directory.Exists(error.LastCheckpoint));
        AssertEveryTensorFinite(temp.File("output"));
    }

    [Theory]
    [InlineData(1, "the checkpoint was not written")]
    [InlineData(0, "the final LoRA files were not written")]
    public async Task ANonFiniteLoraWeightIsNeverWrittenAnywhere(int checkpointEvery, string expected)
    {
        using var temp = new TempDirectory();
        // A weight that went bad without a bad gradient (as a wrong kernel in the update would make it).
        var hooks = new TrainingHooks { BeforeOptimizerStep = (step, parameters) => { if (step == 3) parameters[0].detach().view(-1)[1].fill_(float.PositiveInfinity); } };
        var trainer = Tiny(temp, 3).WithCheckpointEvery(checkpointEvery).WithHooks(hooks).Build();

        var error = await Assert.ThrowsAsync<TrainingFailedException>(() => trainer.TrainAsync());

        output.WriteLine(error.Message);
        Assert.Equal(3, error.Step);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Contains("NaN or infinity", error.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(temp.File("output"), "lora_weights.pt")));
        Assert.False(File.Exists(Path.Combine(temp.File("output"), "lora_kohya.safetensors")));
        Assert.False(Directory.Exists(Path.Combine(temp.File("output"), "checkpoint-step-3")));
        if (checkpointEvery == 1)
        {
            Assert.EndsWith("checkpoint-step-2", error.LastCheckpoint, StringComparison.Ordinal);
            AssertEveryTensorFinite(temp.File("output"));
        }
    }

    [Fact]
    public void ConsecutiveSkipsCountUpToTheLimitAndResetOnAGoodStep()
    {
        var skips = new ConsecutiveSkips(3);
        skips.Count(1, Array.Empty<string>(), "x", null);
        skips.Count(2, Array.Empty<string>(), "x", null);
        skips.Reset();
        skips.Count(4, Array.Empty<string>(), "x", null);
        skips.Count(5, Array.Empty<string>(), "x", null);
        var error = Assert.Throws<TrainingFailedException>(() => skips.Count(6, new[] { "a.png" }, "the loss is not finite", "/out/checkpoint-step-3"));
        Assert.Equal(6, error.Step);
        Assert.Equal("/out/checkpoint-step-3", error.LastCheckpoint);
        var unlimited = new ConsecutiveSkips(0);
        for (int i = 0; i < 1000; i++)
            unlimited.Count(i, Array.Empty<string>(), "x", null);
    }

    /// <summary>Every tensor of every weights file anywhere under <paramref name="directory"/> is finite.</summary>
    internal static void AssertEveryTensorFinite(string directory)
    {
        var files = Directory.GetFiles(directory, "*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".pt", StringComparison.Ordinal) || f.EndsWith(".safetensors", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(files);
        foreach (string file in files)
        {
            using var reader = TensorFiles.Open(file);
            foreach (var info in reader.Tensors)
            {
                using var tensor = reader.Read(info.Name);
                if (is_floating_point(tensor))
                    Assert.True(tensor.isfinite().all().item<bool>(), $"{file}: '{info.Name}' holds NaN or infinity");
            }
        }
    }
}
