using StableLora.Data;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;

namespace StableLora.Tests.Training;

/// <summary>
/// Training on the tiny fixture pipeline (CPU, float32) with non-default learning-rate schedules and sd-scripts' loss
/// settings: a run interrupted and resumed ends with the same bytes as a straight one, the learning rates follow the
/// schedule, and the kohya file records the settings.
/// </summary>
public sealed class ScheduleAndLossTrainingTests
{
    private static LoraTrainingBuilder Tiny(TempDirectory temp, string model, int maxSteps, string output) =>
        LoraTrainingBuilder.FromPretrained(model)
            .WithDataset(Sketches(temp))
            .WithResolution(16)
            .WithBatchSize(2)
            .WithLearningRate(1e-3)
            .WithMaxSteps(maxSteps)
            .WithRank(4)
            .WithCheckpointEvery(0)
            .WithDevice("cpu")
            .WithSeed(11)
            .WithOutputDirectory(temp.File(output));

    private static string Sketches(TempDirectory temp)
    {
        string directory = temp.File("sketches");
        if (!Directory.Exists(directory))
            SketchImageGenerator.Generate(directory, count: 4, size: 24, seed: 4);
        return directory;
    }

    /// <summary>cosine_with_restarts (2 cycles, warm-up ratio 0.25), Huber loss with the snr schedule, input perturbation noise, debiased estimation.</summary>
    private static LoraTrainingBuilder HuberRun(TempDirectory temp, string output) =>
        Tiny(temp, FixturePaths.TinyPipeline, 4, output)
            .WithLearningRateSchedule(LearningRateSchedule.CosineWithRestarts, cycles: 2)
            .WithWarmupRatio(0.25)
            .WithLossType(LossType.Huber, huberC: 0.2, HuberSchedule.Snr)
            .WithIpNoiseGamma(0.1)
            .WithDebiasedEstimation();

    [Fact]
    public async Task AHuberRunWithRestartsResumedAfterTwoStepsEndsWithTheStraightRunsBytes()
    {
        using var temp = new TempDirectory();
        var progress = new List<TrainingProgress>();
        var straight = await HuberRun(temp, "straight").WithObserver(new ProgressRecorder(progress)).Build().TrainAsync();
        Assert.Equal(4, straight.StepsCompleted);

        using var cancellation = new CancellationTokenSource();
        var first = await HuberRun(temp, "resumed").WithCheckpointEvery(100).WithObserver(new CancelAt(2, cancellation)).Build().TrainAsync(cancellation.Token);
        Assert.True(first.Cancelled);
        Assert.Equal(2, first.StepsCompleted);
        var second = await HuberRun(temp, "resumed").WithCheckpointEvery(100).WithResume("latest").Build().TrainAsync();
        Assert.Equal(4, second.StepsCompleted);

        AssertSameBytes(temp.File("straight"), temp.File("resumed"));

        // The reported learning rate is the peak times diffusers' multiplier after each applied step.
        var schedule = LearningRateScheduleSettings.For(HuberRun(temp, "unused").Options);
        Assert.Equal(1, schedule.WarmupSteps);
        Assert.Equal(new[] { 0.0, 1e-3 * schedule.Multiplier(1), 1e-3 * schedule.Multiplier(2), 1e-3 * schedule.Multiplier(3) }, progress.Select(p => p.LearningRate));
        Assert.All(progress, p => Assert.True(double.IsFinite(p.Loss) && !p.SkippedStep));

        var metadata = SafetensorsReader.ReadMetadata(straight.KohyaWeightsPath);
        Assert.Equal("cosine_with_restarts", metadata["ss_lr_scheduler"]);
        Assert.Equal("0.25", metadata["ss_lr_warmup_steps"]);
        Assert.Equal("huber", metadata["ss_loss_type"]);
        Assert.Equal("0.2", metadata["ss_huber_c"]);
        Assert.Equal("snr", metadata["ss_huber_schedule"]);
        Assert.Equal("1.0", metadata["ss_huber_scale"]);
        Assert.Equal("True", metadata["ss_debiased_estimation"]);
        Assert.Equal("0.1", metadata["ss_ip_noise_gamma"]);
        Assert.Equal("False", metadata["ss_zero_terminal_snr"]);
        Assert.Equal("1.0", metadata["ss_max_grad_norm"]);
        Assert.Equal("None", metadata["ss_min_snr_gamma"]);
        Assert.Equal("None", metadata["ss_noise_offset"]);
        Assert.False(metadata.ContainsKey("ss_lr_scheduler_num_cycles"), "sd-scripts writes no cycles");
    }

    /// <summary>A v-prediction copy of the fixture with zero terminal SNR, min-SNR, the v-prediction-like loss and a polynomial schedule.</summary>
    [Fact]
    public async Task ZeroTerminalSnrOnAVPredictionModelTrainsAndResumesExactly()
    {
        using var temp = new TempDirectory();
        using var model = new FixturePipelineCopy();
        string config = model.Component("scheduler/scheduler_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"num_train_timesteps\": 1000,", "\"num_train_timesteps\": 1000,\n  \"prediction_type\": \"v_prediction\",", StringComparison.Ordinal));

        LoraTrainingBuilder Run(string output) => Tiny(temp, model.Directory, 4, output)
            .WithLearningRateSchedule(LearningRateSchedule.Polynomial, power: 2, endLearningRate: 1e-5)
            .WithWarmupSteps(1)
            .WithZeroTerminalSnr()
            .WithMinSnrGamma(5)
            .WithVPredLikeLoss(0.1)
            .WithNoiseOffset(0.05);

        var losses = new List<TrainingProgress>();
        var straight = await Run("straight").WithCheckpointEvery(2).WithObserver(new ProgressRecorder(losses)).Build().TrainAsync();
        var resumed = await Run("resumed").WithResume(Path.Combine(temp.File("straight"), "checkpoint-step-2")).Build().TrainAsync();
        Assert.Equal(4, resumed.StepsCompleted);
        Assert.All(losses, p => Assert.True(double.IsFinite(p.Loss) && !p.SkippedStep));
        AssertSameLora(straight.KohyaWeightsPath, resumed.KohyaWeightsPath);

        var metadata = SafetensorsReader.ReadMetadata(straight.KohyaWeightsPath);
        Assert.Equal(("polynomial", "1", "True"), (metadata["ss_lr_scheduler"], metadata["ss_lr_warmup_steps"], metadata["ss_zero_terminal_snr"]));
        Assert.Equal(("5.0", "0.05", "l2"), (metadata["ss_min_snr_gamma"], metadata["ss_noise_offset"], metadata["ss_loss_type"]));
    }

    [Fact]
    public async Task ZeroTerminalSnrOnAnEpsilonModelIsRefusedNamingTheOption()
    {
        using var temp = new TempDirectory();
        var error = await Assert.ThrowsAsync<InvalidOptionsException>(() => Tiny(temp, FixturePaths.TinyPipeline, 2, "out").WithWarmupSteps(0).WithZeroTerminalSnr().Build().TrainAsync());
        Assert.Equal("ZeroTerminalSnr", error.Errors[0].Option);
        Assert.Contains("v_prediction", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheDefaultRunWritesSdScriptsDefaultsForTheNewKeys()
    {
        using var temp = new TempDirectory();
        var result = await Tiny(temp, FixturePaths.TinyPipeline, 1, "out").WithWarmupSteps(0).Build().TrainAsync();
        var metadata = SafetensorsReader.ReadMetadata(result.KohyaWeightsPath);
        var expected = new Dictionary<string, string>
        {
            ["ss_lr_scheduler"] = "cosine",
            ["ss_lr_warmup_steps"] = "0",
            ["ss_loss_type"] = "l2",
            ["ss_huber_c"] = "0.1",
            ["ss_huber_schedule"] = "snr",
            ["ss_huber_scale"] = "1.0",
            ["ss_debiased_estimation"] = "False",
            ["ss_ip_noise_gamma"] = "None",
            ["ss_zero_terminal_snr"] = "False",
            ["ss_max_grad_norm"] = "1.0",
            ["ss_min_snr_gamma"] = "None",
            ["ss_noise_offset"] = "None",
        };
        foreach (var (key, value) in expected)
            Assert.True(metadata.TryGetValue(key, out var actual) && actual == value, $"{key}: expected {value}, got {actual ?? "(missing)"}");
    }

    private static void AssertSameBytes(string expectedFolder, string actualFolder)
    {
        foreach (var file in new[] { CheckpointStore.LoraFile, CheckpointStore.KohyaLoraFile })
            Assert.True(File.ReadAllBytes(Path.Combine(expectedFolder, file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(actualFolder, file))), $"{file} differs");
    }

    private static void AssertSameLora(string expectedPath, string actualPath) =>
        Assert.True(File.ReadAllBytes(expectedPath).AsSpan().SequenceEqual(File.ReadAllBytes(actualPath)), $"{actualPath} differs from {expectedPath}");
}
