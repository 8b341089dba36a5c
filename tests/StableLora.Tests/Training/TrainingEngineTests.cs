using System.Security.Cryptography;
using StableLora.Data;
using StableLora.IO;
using StableLora.Layers;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// The whole training engine on the tiny fixture pipeline (random-weight UNet, VAE and text encoder) and a handful of
/// generated 16 px sketches, on the CPU in float32.
/// </summary>
public sealed class TrainingEngineTests(ITestOutputHelper output)
{
    private static LoraTrainingBuilder Tiny(TempDirectory temp, int maxSteps, string output, OptimizerType optimizer) =>
        optimizer switch
        {
            OptimizerType.AdamW => Tiny(temp, maxSteps, output),
            // Prodigy's learning rate multiplies the step size it estimates (1.0 as its authors advise); its state
            // (d, d_max, d_numerator, k, p0, s) must come back from the checkpoint.
            OptimizerType.Prodigy => Tiny(temp, maxSteps, output).WithLearningRate(1.0).WithOptimizer(optimizer, "weight_decay=0.01", "use_bias_correction=True"),
            OptimizerType.Adafactor => Tiny(temp, maxSteps, output).WithOptimizer(optimizer, "beta1=0.9"),
            _ => Tiny(temp, maxSteps, output).WithOptimizer(optimizer),
        };

    private static LoraTrainingBuilder Tiny(TempDirectory temp, int maxSteps, string output = "output") =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(Sketches(temp))
            .WithCaption("a sketch")
            .WithResolution(16)
            .WithBatchSize(2)
            .WithLearningRate(1e-3)
            .WithMaxSteps(maxSteps)
            .WithWarmupSteps(5)
            .WithRank(4)
            .WithCheckpointEvery(0)
            .WithDevice("cpu")
            .WithSeed(7)
            .WithOutputDirectory(temp.File(output));

    private static string Sketches(TempDirectory temp)
    {
        string directory = temp.File("sketches");
        if (!Directory.Exists(directory))
            SketchImageGenerator.Generate(directory, count: 6, size: 24, seed: 3);
        return directory;
    }

    [Fact]
    public async Task LossFallsClearlyFrozenWeightsStayBitIdenticalAndOnlyLoraFilesAreWritten()
    {
        using var temp = new TempDirectory();
        var modelFiles = HashFolder(FixturePaths.TinyPipeline);
        var losses = new List<double>();
        List<KeyValuePair<string, Tensor>>? frozenBefore = null;
        List<KeyValuePair<string, Tensor>>? frozenAfter = null;
        var hooks = new TrainingHooks
        {
            ModelLoaded = model => frozenBefore = FrozenWeights(model),
            TrainingFinished = model => frozenAfter = FrozenWeights(model),
        };
        var trainer = Tiny(temp, maxSteps: 300).WithLearningRate(5e-3).WithObserver(new LossRecorder(losses)).WithHooks(hooks).Build();
        var result = await trainer.TrainAsync();

        double first = losses.Take(40).Average(), last = losses.TakeLast(40).Average();
        output.WriteLine($"mean loss of steps 1-40: {first:F4}; of steps 261-300: {last:F4} ({(1 - last / first) * 100:F1}% lower)");
        Assert.Equal(300, result.StepsCompleted);
        Assert.True(last < 0.75 * first, $"the loss should fall by more than 25%: first 40 steps {first:F4}, last 40 steps {last:F4}");

        Assert.Equal(frozenBefore!.Count, frozenAfter!.Count);
        for (int i = 0; i < frozenBefore.Count; i++)
            TensorAssert.Identical(frozenBefore[i].Value, frozenAfter[i].Value, frozenBefore[i].Key);
        Assert.Equal(modelFiles, HashFolder(FixturePaths.TinyPipeline));

        var written = Directory.GetFiles(temp.File("output"), "*", SearchOption.AllDirectories).Select(Path.GetFileName).OrderBy(n => n).ToArray();
        Assert.Equal(new[] { "lora_kohya.safetensors", "lora_weights.pt" }, written);
        using var lora = LoraWeights.Load(result.LoraPath);
        Assert.Equal(176, lora.ModuleCount * 2);
        Assert.Equal(4, lora.Rank);
    }

    [Theory]
    [InlineData(OptimizerType.AdamW)]
    [InlineData(OptimizerType.Prodigy)]
    [InlineData(OptimizerType.Adafactor)]
    [InlineData(OptimizerType.Sgd)]
    [InlineData(OptimizerType.Lion)]
    public async Task CancelledThenResumedRunEqualsAnUninterruptedRunBitForBit(OptimizerType optimizer)
    {
        using var temp = new TempDirectory();
        var straight = await Tiny(temp, maxSteps: 16, output: "straight", optimizer).WithCheckpointEvery(8).Build().TrainAsync();
        Assert.False(straight.Cancelled);
        Assert.True(Directory.Exists(Path.Combine(temp.File("straight"), "checkpoint-step-8")));

        using var cancellation = new CancellationTokenSource();
        var first = await Tiny(temp, maxSteps: 16, output: "resumed", optimizer).WithCheckpointEvery(100)
            .WithObserver(new CancelAt(5, cancellation)).Build().TrainAsync(cancellation.Token);
        Assert.True(first.Cancelled);
        Assert.Equal(5, first.StepsCompleted);
        Assert.EndsWith("checkpoint-step-5", first.LastCheckpointPath);

        var second = await Tiny(temp, maxSteps: 16, output: "resumed", optimizer).WithCheckpointEvery(100).WithResume("latest").Build().TrainAsync();
        Assert.Equal(16, second.StepsCompleted);
        AssertSameLora(straight.LoraPath, second.LoraPath);
    }

    [Fact]
    public async Task ResumingFromAPeriodicCheckpointEqualsTheStraightRun()
    {
        using var temp = new TempDirectory();
        var straight = await Tiny(temp, maxSteps: 12, output: "a").WithCheckpointEvery(6).Build().TrainAsync();
        var resumed = await Tiny(temp, maxSteps: 12, output: "b").WithCheckpointEvery(6)
            .WithResume(Path.Combine(temp.File("a"), "checkpoint-step-6")).Build().TrainAsync();
        AssertSameLora(straight.LoraPath, resumed.LoraPath);
    }

    [Fact]
    public async Task ForcedFp16OverflowSkipsTheStepAndHalvesTheScale()
    {
        using var temp = new TempDirectory();
        var progress = new List<TrainingProgress>();
        // The first step's gradients are poisoned with +inf, as an fp16 overflow leaves them.
        var hooks = new TrainingHooks
        {
            BeforeOptimizerStep = (step, parameters) =>
            {
                if (step == 1)
                {
                    using var grad = parameters[0].grad!;
                    grad.view(-1)[0] = tensor(float.PositiveInfinity);
                }
            },
        };
        await Tiny(temp, maxSteps: 3).WithWarmupSteps(0).WithMixedPrecision(MixedPrecision.Fp16).WithHooks(hooks)
            .WithObserver(new ProgressRecorder(progress)).Build().TrainAsync();
        Assert.Equal(3, progress.Count);
        Assert.True(progress[0].SkippedStep);
        Assert.Equal(LossScaler.DefaultInitialScale / 2, progress[0].LossScale);
        Assert.False(progress[1].SkippedStep);
        Assert.False(progress[2].SkippedStep);
        Assert.Equal(LossScaler.DefaultInitialScale / 2, progress[2].LossScale);
        using var lora = LoraWeights.Load(temp.File("output/lora_weights.pt"));
        Assert.All(lora.Modules, m => Assert.True(m.Tensors.All(t => t.isfinite().all().item<bool>())));
    }

    [Fact]
    public void LossScalerHalvesOnOverflowAndDoublesAfterTwoThousandGoodSteps()
    {
        var scaler = new LossScaler();
        var parameter = new TorchSharp.Modules.Parameter(zeros(3)) { grad = tensor(new[] { 1f, float.PositiveInfinity, 0f }) };
        Assert.False(scaler.UnscaleAndCheck(new[] { parameter }));
        scaler.Update(foundInfOrNaN: true);
        Assert.Equal(32768.0, scaler.Scale);
        parameter.grad = tensor(new[] { 32768f, 65536f, 0f });
        Assert.True(scaler.UnscaleAndCheck(new[] { parameter }));
        Assert.Equal(new[] { 1f, 2f, 0f }, parameter.grad!.data<float>().ToArray());
        for (int i = 0; i < LossScaler.GrowthInterval; i++)
            scaler.Update(foundInfOrNaN: false);
        Assert.Equal(65536.0, scaler.Scale);
    }

    [Fact]
    public void BuildReportsEveryInvalidOptionWithItsValue()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("a-file"), "");
        var error = Assert.Throws<InvalidOptionsException>(() => LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(temp.File("missing"))
            .WithRank(0).WithBatchSize(0).WithLearningRate(0).WithMaxSteps(10).WithWarmupSteps(20)
            .WithOutputDirectory(temp.File("a-file")).WithDevice("tpu").Build());
        var byOption = error.Errors.ToDictionary(e => e.Option);
        Assert.Equal("0", byOption["Rank"].Value);
        Assert.Equal("0", byOption["BatchSize"].Value);
        Assert.Equal("0", byOption["LearningRate"].Value);
        Assert.Equal("20", byOption["WarmupSteps"].Value);
        Assert.Equal("tpu", byOption["Device"].Value);
        Assert.Contains("does not exist", byOption["DataDirectory"].Message);
        Assert.Contains("is a file", byOption["OutputDirectory"].Message);
        Assert.Contains("Rank = 0", error.Message);
    }

    private static void AssertSameLora(string expectedPath, string actualPath)
    {
        using var expected = TorchPickleReader.Open(expectedPath);
        using var actual = TorchPickleReader.Open(actualPath);
        Assert.Equal(expected.Tensors.Select(t => t.Name), actual.Tensors.Select(t => t.Name));
        foreach (var info in expected.Tensors)
        {
            using var a = expected.Read(info.Name);
            using var b = actual.Read(info.Name);
            TensorAssert.Identical(a, b, info.Name);
        }
    }

    private static List<KeyValuePair<string, Tensor>> FrozenWeights(StableLora.Pipeline.StableDiffusionModel model) =>
        new[] { ("unet.", (nn.Module)model.Unet), ("vae.", model.Vae), ("text_encoder.", model.TextEncoder) }
            .SelectMany(c => StateDicts.Ordered(c.Item2).Select(e => new KeyValuePair<string, Tensor>(c.Item1 + e.Key, e.Value.detach().clone())))
            .ToList();

    private static Dictionary<string, string> HashFolder(string directory) =>
        Directory.GetFiles(directory, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(directory, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    private sealed class LossRecorder(List<double> losses) : ITrainingObserver
    {
        public ValueTask OnStepCompletedAsync(StepCompletedEvent e)
        {
            losses.Add(e.Progress.Loss);
            return ValueTask.CompletedTask;
        }
    }

}

public sealed class TrainingEngineExtrasTests
{
    private static LoraTrainingBuilder Tiny(TempDirectory temp, int maxSteps, string output = "output")
    {
        string sketches = temp.File("sketches");
        if (!Directory.Exists(sketches))
            SketchImageGenerator.Generate(sketches, count: 4, size: 24, seed: 5);
        return LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline).WithDataset(sketches).WithResolution(16).WithBatchSize(2)
            .WithLearningRate(1e-3).WithMaxSteps(maxSteps).WithWarmupSteps(1).WithCheckpointEvery(0).WithDevice("cpu").WithSeed(9)
            .WithOutputDirectory(temp.File(output));
    }

    [Fact]
    public async Task ValidationImagesAreRenderedAtCheckpointsAndHandedToObservers()
    {
        using var temp = new TempDirectory();
        var events = new List<ValidationImagesEvent>();
        var checkpoints = new List<CheckpointSavedEvent>();
        await Tiny(temp, 4).WithCheckpointEvery(2).WithValidationPrompt("a sketch of a boat")
            .WithObserver(new Recorder(events, checkpoints)).Build().TrainAsync();
        Assert.Equal(new long[] { 2, 4 }, events.Select(e => e.Step));
        Assert.Equal(new long[] { 2, 4 }, checkpoints.Select(e => e.Step));
        var image = Assert.Single(events[0].ImagePaths);
        Assert.True(File.Exists(image));
        Assert.Equal("a sketch of a boat", GenerationResult.ReadParameters(image)!.Prompt);
    }

    [Fact]
    public async Task AThrowingObserverFailsTheRunAfterACheckpointAndTheOthersAreStillCalled()
    {
        using var temp = new TempDirectory();
        var logger = new ListLogger();
        var events = new List<ValidationImagesEvent>();
        var checkpoints = new List<CheckpointSavedEvent>();
        var error = await Assert.ThrowsAsync<TrainingFailedException>(() => Tiny(temp, 3).WithCheckpointEvery(0).WithLogger(logger).WithObserver(new Thrower())
            .WithObserver(new Recorder(events, checkpoints)).Build().TrainAsync());
        Assert.Equal(1, error.Step);
        Assert.IsType<InvalidOperationException>(error.InnerException);
        Assert.Contains("Thrower", error.Message);
        Assert.EndsWith("checkpoint-step-1", error.LastCheckpoint);
        Assert.True(File.Exists(Path.Combine(error.LastCheckpoint!, "trainer_state.json")));
        Assert.Single(checkpoints);
        Assert.Contains(logger.Entries, e => e.Message.Contains("Thrower threw", StringComparison.Ordinal));
        Assert.False(File.Exists(temp.File("output/lora_kohya.safetensors")));
    }

    [Fact]
    public async Task AnObserverCanStopTheRunGracefully()
    {
        using var temp = new TempDirectory();
        var result = await Tiny(temp, 6).WithCheckpointEvery(0).WithObserver(new StopAt(2)).Build().TrainAsync();
        Assert.True(result.Cancelled);
        Assert.Equal(2, result.StepsCompleted);
        Assert.EndsWith("checkpoint-step-2", result.LastCheckpointPath);
    }

    private sealed class StopAt(long step) : ITrainingObserver
    {
        public ValueTask OnStepCompletedAsync(StepCompletedEvent e)
        {
            Assert.False(e.Control!.CancellationToken.IsCancellationRequested);
            if (e.Progress.Step == step)
                e.Control.RequestStop();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>
    /// The cache encodes each image once, possibly in a different batch grouping than the per-step path, and batched
    /// convolutions round differently by grouping: the LoRAs agree to float32 rounding, not to the bit.
    /// </summary>
    [Fact]
    public async Task CachedLatentsTrainAsEncodingEveryStepWithinFloatRounding()
    {
        using var temp = new TempDirectory();
        var plain = await Tiny(temp, 5, "plain").Build().TrainAsync();
        var cached = await Tiny(temp, 5, "cached").WithLatentCaching().Build().TrainAsync();
        using var expected = TorchPickleReader.Open(plain.LoraPath);
        using var actual = TorchPickleReader.Open(cached.LoraPath);
        foreach (var info in expected.Tensors)
        {
            using var a = expected.Read(info.Name);
            using var b = actual.Read(info.Name);
            TensorAssert.Close(a, b, new Tolerance(1e-6, 1e-5), info.Name);
        }
    }

    [Fact]
    public async Task Bf16MixedPrecisionTrainsWithFloat32LoraWeights()
    {
        using var temp = new TempDirectory();
        var losses = new List<double>();
        var result = await Tiny(temp, 4).WithMixedPrecision(MixedPrecision.Bf16).WithObserver(new LossRecorder(losses)).Build().TrainAsync();
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        using var reader = TorchPickleReader.Open(result.LoraPath);
        Assert.All(reader.Tensors, t => Assert.Equal(ScalarType.Float32, t.DType));
    }

    [Fact]
    public async Task NonFiniteLossIsSkippedByDefaultNamingTheStepAndImagesAndNeverReachesTheLora()
    {
        using var temp = new TempDirectory();
        var logger = new ListLogger();
        var progress = new List<double>();
        var hooks = new TrainingHooks { BeforeMicroStep = (step, pixels) => { if (step == 2) pixels.fill_(float.NaN); } };
        var result = await Tiny(temp, 4).WithCheckpointEvery(2).WithLogger(logger).WithHooks(hooks).WithObserver(new LossRecorder(progress)).Build().TrainAsync();
        Assert.True(double.IsNaN(progress[1]));
        Assert.Contains(logger.Entries, e => e.Message.Contains("Step 2", StringComparison.Ordinal) && e.Message.Contains("sketch-", StringComparison.Ordinal));
        foreach (var file in new[] { result.LoraPath, Path.Combine(temp.File("output"), "checkpoint-step-2", "lora_weights.pt") })
        {
            using var lora = LoraWeights.Load(file);
            Assert.All(lora.Modules, m => Assert.True(m.Tensors.All(t => t.isfinite().all().item<bool>()), file));
        }
    }

    [Fact]
    public async Task NonFiniteLossWithTheStopPolicyFailsNamingTheStepAndKeepsTheLastCheckpoint()
    {
        using var temp = new TempDirectory();
        var failures = new List<TrainingFailedEvent>();
        var hooks = new TrainingHooks { BeforeMicroStep = (step, pixels) => { if (step == 3) pixels.fill_(float.NaN); } };
        var trainer = Tiny(temp, 5).WithCheckpointEvery(2).WithNonFiniteLossPolicy(NonFiniteLossPolicy.Stop).WithHooks(hooks)
            .WithObserver(new FailureRecorder(failures)).Build();
        var error = await Assert.ThrowsAsync<TrainingFailedException>(() => trainer.TrainAsync());
        Assert.Equal(3, error.Step);
        Assert.Equal(2, error.ImageNames.Count);
        Assert.Single(failures);
        using var checkpoint = LoraWeights.Load(Path.Combine(temp.File("output"), "checkpoint-step-2", "lora_weights.pt"));
        Assert.Equal(88, checkpoint.ModuleCount);
    }

    private sealed class Recorder(List<ValidationImagesEvent> validation, List<CheckpointSavedEvent> checkpoints) : ITrainingObserver
    {
        public ValueTask OnValidationImagesAsync(ValidationImagesEvent e)
        {
            validation.Add(e);
            return ValueTask.CompletedTask;
        }

        public ValueTask OnCheckpointSavedAsync(CheckpointSavedEvent e)
        {
            checkpoints.Add(e);
            return ValueTask.CompletedTask;
        }
    }

    private sealed class Thrower : ITrainingObserver
    {
        public ValueTask OnStepCompletedAsync(StepCompletedEvent e) => throw new InvalidOperationException("observer bug");

        public ValueTask OnCheckpointSavedAsync(CheckpointSavedEvent e) => throw new InvalidOperationException("observer bug");
    }

    private sealed class LossRecorder(List<double> losses) : ITrainingObserver
    {
        public ValueTask OnStepCompletedAsync(StepCompletedEvent e)
        {
            losses.Add(e.Progress.Loss);
            return ValueTask.CompletedTask;
        }
    }

    private sealed class FailureRecorder(List<TrainingFailedEvent> failures) : ITrainingObserver
    {
        public ValueTask OnTrainingFailedAsync(TrainingFailedEvent e)
        {
            failures.Add(e);
            return ValueTask.CompletedTask;
        }
    }
}
