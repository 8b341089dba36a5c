using StableLora.Data;
using StableLora.IO;
using StableLora.Samples.Cli;
using StableLora.Tests.Infrastructure;
using StableLora.Training;

namespace StableLora.Tests.Training;

/// <summary>Choosing the optimizer: names, arguments and their errors, the command line, the kohya metadata and the reported learning rates.</summary>
public sealed class OptimizerOptionsTests
{
    [Theory]
    [InlineData("AdamW8bit")]
    [InlineData("adamw8bit")]
    [InlineData("PagedAdamW8bit")]
    [InlineData("PagedAdamW32bit")]
    [InlineData("Lion8bit")]
    [InlineData("PagedLion8bit")]
    [InlineData("SGDNesterov8bit")]
    [InlineData("bnb.optim.AdamW8bit")]
    public void BitsandbytesOptimizersAreAOneLineErrorNamingTheAlternatives(string name)
    {
        Assert.False(OptimizerChoice.TryParseName(name, out _, out string error));
        Assert.Contains("bitsandbytes", error, StringComparison.Ordinal);
        Assert.Contains("not supported", error, StringComparison.Ordinal);
        Assert.Contains("adamw, prodigy, adafactor, lion or sgd", error, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error);
    }

    [Theory]
    [InlineData("AdamW", OptimizerType.AdamW)]
    [InlineData("prodigy", OptimizerType.Prodigy)]
    [InlineData("Adafactor", OptimizerType.Adafactor)]
    [InlineData("Lion", OptimizerType.Lion)]
    [InlineData("SGDNesterov", OptimizerType.Sgd)]
    [InlineData("sgd", OptimizerType.Sgd)]
    public void SdScriptsAndOurNamesAreRead(string name, OptimizerType expected)
    {
        Assert.True(OptimizerChoice.TryParseName(name, out var type, out _));
        Assert.Equal(expected, type);
    }

    [Fact]
    public void AnUnknownOptimizerNameSaysWhatIsSupported()
    {
        Assert.False(OptimizerChoice.TryParseName("DAdaptAdam", out _, out string error));
        Assert.Equal("unknown optimizer 'DAdaptAdam'; expected adamw, prodigy, adafactor, lion or sgd", error);
    }

    [Theory]
    [InlineData(OptimizerType.Prodigy, "d_coef=2", "decouple=True", "use_bias_correction=true", "safeguard_warmup=False", "betas=(0.9,0.99)", "beta3=None", "growth_rate=inf", "d0=1e-6", "eps=1e-8", "weight_decay=0.01")]
    [InlineData(OptimizerType.Adafactor, "scale_parameter=False", "relative_step=False", "warmup_init=False", "eps=(1e-30, 1e-3)", "beta1=0.9", "clip_threshold=1.0", "decay_rate=-0.8")]
    [InlineData(OptimizerType.Lion, "betas=[0.95, 0.98]", "weight_decay=0.1")]
    [InlineData(OptimizerType.Sgd, "momentum=0.8", "weight_decay=1e-4")]
    [InlineData(OptimizerType.AdamW, "betas=0.9,0.99", "eps=1e-6", "weight_decay=0")]
    public void SdScriptsSpellingsOfValuesAreAccepted(OptimizerType type, params string[] arguments)
    {
        Assert.Empty(OptimizerChoice.Problems(type, OptimizerChoice.ParsePairs(arguments)));
        var options = LoraTrainingBuilder.FromPretrained("m").WithOptimizer(type, arguments).Options;
        Assert.Equal(type, options.Optimizer);
        Assert.Equal(arguments.Length, options.OptimizerArguments.Count);
    }

    [Theory]
    [InlineData(OptimizerType.Prodigy, "lr_typo=1", "unknown Prodigy argument 'lr_typo'; known: betas, beta3, eps, weight_decay, decouple, use_bias_correction, safeguard_warmup, d0, d_coef, growth_rate")]
    [InlineData(OptimizerType.Lion, "decouple=True", "unknown Lion argument 'decouple'; known: betas, weight_decay")]
    [InlineData(OptimizerType.Sgd, "nesterov=False", "unknown Sgd argument 'nesterov'; known: momentum, weight_decay")]
    [InlineData(OptimizerType.Prodigy, "decouple=maybe", "Prodigy argument decouple=maybe: expected True or False")]
    [InlineData(OptimizerType.Prodigy, "betas=0.9", "Prodigy argument betas=0.9: expected two numbers, such as 0.9,0.999")]
    [InlineData(OptimizerType.Prodigy, "d0=0", "Prodigy argument d0=0: must be positive")]
    [InlineData(OptimizerType.Adafactor, "warmup_init=True,relative_step=False", "Adafactor argument warmup_init=True: needs relative_step=True")]
    [InlineData(OptimizerType.Sgd, "momentum=0", "Sgd argument momentum=0: must be positive (Nesterov momentum needs one)")]
    public void BadArgumentsAreErrorsNamingTheKey(OptimizerType type, string arguments, string expected)
    {
        var pairs = OptimizerChoice.ParsePairs(arguments.Split(','));
        Assert.Contains(expected, OptimizerChoice.Problems(type, pairs));
        var error = Assert.Throws<InvalidOptionsException>(() => Builder().WithOptimizer(type, pairs).Build());
        Assert.Contains(error.Errors, e => e.Option == nameof(LoraTrainingOptions.OptimizerArguments) && e.Message == expected);
    }

    [Fact]
    public void ProdigyRefusesDifferentNonZeroLearningRatesPerGroup()
    {
        var error = Assert.Throws<InvalidOptionsException>(() => Builder().WithLearningRate(1.0).WithTextEncoderLora(learningRate: 0.5).WithOptimizer(OptimizerType.Prodigy).Build());
        Assert.Contains(error.Errors, e => e.Option == nameof(LoraTrainingOptions.TextEncoderLearningRate) && e.Message.Contains("Prodigy takes one learning rate", StringComparison.Ordinal));
        // 0 freezes the group, as prodigyopt allows.
        Builder().WithLearningRate(1.0).WithTextEncoderLora(learningRate: 0).WithOptimizer(OptimizerType.Prodigy).Build();
    }

    [Fact]
    public void AnArgumentThatIsNotKeyEqualsValueIsAFormatError() =>
        Assert.Throws<FormatException>(() => LoraTrainingBuilder.FromPretrained("m").WithOptimizer(OptimizerType.Prodigy, "decouple"));

    [Theory]
    [InlineData(OptimizerType.AdamW, new string[0], "torch.optim.adamw.AdamW")]
    [InlineData(OptimizerType.Prodigy, new[] { "decouple=True", "weight_decay=0.01", "d_coef=2" }, "prodigyopt.prodigy.Prodigy(decouple=True,weight_decay=0.01,d_coef=2)")]
    [InlineData(OptimizerType.Prodigy, new[] { "betas=0.9,0.99", "use_bias_correction=true" }, "prodigyopt.prodigy.Prodigy(betas=(0.9, 0.99),use_bias_correction=True)")]
    [InlineData(OptimizerType.Adafactor, new string[0], "transformers.optimization.Adafactor(relative_step=True)")]
    [InlineData(OptimizerType.Adafactor, new[] { "scale_parameter=False", "relative_step=False", "warmup_init=False" },
        "transformers.optimization.Adafactor(scale_parameter=False,relative_step=False,warmup_init=False)")]
    [InlineData(OptimizerType.Lion, new[] { "weight_decay=1e-2" }, "lion_pytorch.lion_pytorch.Lion(weight_decay=0.01)")]
    [InlineData(OptimizerType.Sgd, new string[0], "torch.optim.sgd.SGD(momentum=0.9)")]
    public void SsOptimizerIsWrittenAsSdScriptsWritesIt(OptimizerType type, string[] arguments, string expected) =>
        Assert.Equal(expected, OptimizerChoice.KohyaName(type, OptimizerChoice.ParsePairs(arguments)));

    [Theory]
    [InlineData(new[] { "--optimizer", "adamw8bit" }, "bitsandbytes")]
    [InlineData(new[] { "--optimizer", "dadaptation" }, "unknown optimizer 'dadaptation'")]
    [InlineData(new[] { "--optimizer", "prodigy", "--optimizer-args", "decouple=True", "bogus=1" }, "unknown Prodigy argument 'bogus'")]
    [InlineData(new[] { "--optimizer", "prodigy", "--optimizer-args", "decouple" }, "--optimizer-args: optimizer argument 'decouple' is not key=value")]
    [InlineData(new[] { "--optimizer", "lion", "--optimizer-args", "betas=0.9" }, "expected two numbers")]
    [InlineData(new[] { "--optimizer", "prodigy", "--train-text-encoder", "--lr", "1", "--text-encoder-lr", "0.5" }, "Prodigy takes one learning rate")]
    public async Task BadOptimizerFlagsExitWithTwoAndOneLine(string[] flags, string mention)
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 2, 16, seed: 1);
        var result = await CliRunner.RunAsync(["train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"), "--resolution", "16",
            "--max-steps", "2", "--checkpoint-every", "0", "--device", "cpu", .. flags]);
        Assert.Equal(ExitCodes.BadArguments, result.Code);
        Assert.Contains(mention, result.Error, StringComparison.Ordinal);
        Assert.Single(result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.False(File.Exists(temp.File("out/lora_kohya.safetensors")));
    }

    [Fact]
    public async Task ProdigyThroughTheCommandLineReportsDTimesLrAndWritesSsOptimizer()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 2, 24, seed: 1);
        var train = await CliRunner.RunAsync("train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"), "--resolution", "16",
            "--max-steps", "2", "--checkpoint-every", "0", "--device", "cpu", "--lr", "1", "--optimizer", "prodigy", "--optimizer-args", "decouple=True", "weight_decay=0.01");
        Assert.True(train.Code == 0, train.Error);
        var metadata = SafetensorsReader.ReadMetadata(temp.File("out/lora_kohya.safetensors"));
        Assert.Equal("prodigyopt.prodigy.Prodigy(decouple=True,weight_decay=0.01)", metadata["ss_optimizer"]);
    }

    [Fact]
    public async Task ProgressCarriesEachGroupsLearningRateAndTheEffectiveOne()
    {
        using var temp = new TempDirectory();
        var progress = new List<TrainingProgress>();
        var logger = new ListLogger();
        await Tiny(temp, "prodigy").WithLearningRate(1.0).WithOptimizer(OptimizerType.Prodigy).WithTextEncoderLora(learningRate: 0)
            .WithObserver(new ProgressRecorder(progress)).WithLogger(logger).WithTensorBoard(temp.File("tensorboard")).Build().TrainAsync();
        Assert.NotEmpty(Directory.EnumerateFiles(temp.File("tensorboard"), "*", SearchOption.AllDirectories));
        Assert.DoesNotContain(logger.Entries, e => e.Message.Contains("Prodigy's learning rate", StringComparison.Ordinal));
        Assert.Equal(3, progress.Count);
        Assert.Contains(progress, p => p.LearningRates[0] > 0);
        foreach (var p in progress)
        {
            Assert.Equal(2, p.LearningRates.Count);
            Assert.Equal(p.LearningRate, p.LearningRates[0]);
            Assert.Equal(0.0, p.LearningRates[1]);
            Assert.Equal(0.0, p.EffectiveLearningRates[1]);
            // d starts at d0 = 1e-6 and only grows (the warm-up's first step is at learning rate 0).
            if (p.LearningRates[0] > 0)
                Assert.InRange(p.EffectiveLearningRates[0] / p.LearningRates[0], 1e-6, 1.0);
            else
                Assert.Equal(0.0, p.EffectiveLearningRates[0]);
        }

        // Far from 1.0 (here AdamW's 1e-3) is warned about, as Prodigy's authors advise 1.0.
        var lowLogger = new ListLogger();
        await Tiny(temp, "prodigy-low").WithOptimizer(OptimizerType.Prodigy).WithMaxSteps(1).WithLogger(lowLogger).Build().TrainAsync();
        Assert.Contains(lowLogger.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning
                                                && e.Message.Contains("its authors advise 1.0 (this run's is 0.001)", StringComparison.Ordinal));

        var adafactor = new List<TrainingProgress>();
        var adafactorLogger = new ListLogger();
        var result = await Tiny(temp, "adafactor").WithOptimizer(OptimizerType.Adafactor).WithObserver(new ProgressRecorder(adafactor)).WithLogger(adafactorLogger)
            .Build().TrainAsync();
        Assert.Contains(adafactorLogger.Entries, e => e.Message.Contains("Adafactor computes its own learning rate", StringComparison.Ordinal));
        // relative_step: Adafactor's own learning rate is what is reported, as sd-scripts' adafactor schedule does.
        Assert.All(adafactor, p => Assert.Equal(p.EffectiveLearningRates[0], p.LearningRate));
        Assert.All(adafactor, p => Assert.NotEqual(1e-3, p.LearningRate));
        var metadata = SafetensorsReader.ReadMetadata(result.KohyaWeightsPath);
        Assert.Equal("transformers.optimization.Adafactor(relative_step=True)", metadata["ss_optimizer"]);
        Assert.Equal("adafactor:0.001", metadata["ss_lr_scheduler"]);
    }

    [Fact]
    public async Task ResumingWithAnotherOptimizerThanTheCheckpointsIsAnError()
    {
        using var temp = new TempDirectory();
        await Tiny(temp, "run").WithLearningRate(1.0).WithOptimizer(OptimizerType.Prodigy).WithMaxSteps(2).WithCheckpointEvery(2).Build().TrainAsync();
        var error = await Assert.ThrowsAsync<InvalidOptionsException>(() => Tiny(temp, "run").WithMaxSteps(4).WithResume("latest").Build().TrainAsync());
        Assert.Contains(error.Errors, e => e.Option == nameof(LoraTrainingOptions.ResumeFrom) && e.Message.Contains("holds Prodigy's state; this run's optimizer is AdamW", StringComparison.Ordinal));
    }

    private static LoraTrainingBuilder Builder() =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline).WithDataset(FixturePaths.TinyPipeline)
            .WithOutputDirectory(Path.Combine(Path.GetTempPath(), "stablelora-unused-output")).WithDevice("cpu").WithMaxSteps(2);

    private static LoraTrainingBuilder Tiny(TempDirectory temp, string output)
    {
        string sketches = temp.File("sketches");
        if (!Directory.Exists(sketches))
            SketchImageGenerator.Generate(sketches, count: 4, size: 24, seed: 5);
        return LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline).WithDataset(sketches).WithResolution(16).WithBatchSize(2)
            .WithLearningRate(1e-3).WithMaxSteps(3).WithWarmupSteps(1).WithCheckpointEvery(0).WithDevice("cpu").WithSeed(9)
            .WithOutputDirectory(temp.File(output));
    }
}
