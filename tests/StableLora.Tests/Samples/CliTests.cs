using StableLora.Data;
using StableLora.IO;
using StableLora.Samples.Cli;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Samples;

/// <summary>The <c>stablelora</c> command line, run in-process with its output captured.</summary>
public sealed class CliTests
{
    private static Task<(int Code, string Out, string Error)> Run(params string[] args) => CliRunner.RunAsync(args);

    [Fact]
    public async Task TrainWritesTheLoraAndGenerateAndConvertUseIt()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 4, 24, seed: 1);
        var train = await Run("train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"),
            "--resolution", "16", "--batch-size", "2", "--max-steps", "6", "--warmup-steps", "1", "--checkpoint-every", "3", "--device", "cpu", "--seed", "3");
        Assert.True(train.Code == 0, train.Error);
        Assert.Contains("lora_weights.pt", train.Out);
        Assert.True(File.Exists(temp.File("out/checkpoint-step-3/lora_weights.pt")));

        var generate = await Run("generate", "--model", FixturePaths.TinyPipeline, "--prompt", "a sketch", "--lora", temp.File("out/lora_weights.pt") + ":0.7",
            "--scheduler", "euler-a", "--steps", "3", "--seed", "21", "--count", "2", "--out", temp.File("images"), "--device", "cpu");
        Assert.True(generate.Code == 0, generate.Error);
        var lines = generate.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Where(l => l.EndsWith(".png", StringComparison.Ordinal)).ToList();
        Assert.Equal(new[] { "21-0.png", "21-1.png" }, lines.Select(Path.GetFileName));
        var parameters = GenerationResult.ReadParameters(lines[0])!;
        Assert.Equal("Euler a", parameters.Sampler);
        Assert.Equal(("lora_weights", 0.7), (parameters.Loras[0].Name, parameters.Loras[0].Weight));

        var convert = await Run("convert", "--in", temp.File("out/lora_weights.pt"), "--out", temp.File("lora.safetensors"), "--format", "kohya", "--model", FixturePaths.TinyPipeline);
        Assert.True(convert.Code == 0, convert.Error);
        using var kohya = LoraWeights.Load(temp.File("lora.safetensors"));
        Assert.Equal(LoraFileFormat.Kohya, kohya.SourceFormat);
    }

    [Fact]
    public async Task AModelFolderThatDoesNotExistIsABadFileExitThreeWithOneLine()
    {
        var missing = await Run("generate", "--model", "models/no-such-sd15", "--prompt", "x", "--steps", "1", "--device", "cpu", "--offline");
        Assert.Equal(3, missing.Code);
        string line = Assert.Single(missing.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("models/no-such-sd15", line);
        Assert.Contains("check the path", line);
        Assert.DoesNotContain("internal error", line);
    }

    [Fact]
    public async Task SingleFileModelsReadWithAConfigFolderTrainAndGenerate()
    {
        using var temp = new TempDirectory();
        string single = temp.File("tiny-sd.safetensors");
        ModelConverter.ToSingleFile(FixturePaths.TinyPipeline, single);
        SketchImageGenerator.Generate(temp.File("data"), 2, 24, seed: 1);

        var train = await Run("train", "--model", single, "--config", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"),
            "--resolution", "16", "--max-steps", "2", "--warmup-steps", "0", "--checkpoint-every", "0", "--device", "cpu");
        Assert.True(train.Code == 0, train.Error);
        var generate = await Run("generate", "--model", single, "--config", FixturePaths.TinyPipeline, "--prompt", "a sketch", "--steps", "2", "--seed", "5",
            "--lora", temp.File("out/lora_weights.pt"), "--out", temp.File("images"), "--device", "cpu");
        Assert.True(generate.Code == 0, generate.Error);
        Assert.True(File.Exists(temp.File("images/5-0.png")));

        var missingYaml = await Run("generate", "--model", single, "--original-config", temp.File("v1-inference.yaml"), "--steps", "2", "--device", "cpu");
        Assert.Equal(ExitCodes.BadFiles, missingYaml.Code);
        Assert.Contains("v1-inference.yaml", missingYaml.Error, StringComparison.Ordinal);

        var contradiction = await Run("generate", "--model", "runwayml/stable-diffusion-v1-5", "--allow-download", "--offline");
        Assert.Equal(ExitCodes.BadArguments, contradiction.Code);
        Assert.Contains("--offline", contradiction.Error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new[] { "train", "--rank", "many" }, ExitCodes.BadArguments, "many")]
    [InlineData(new[] { "train", "--no-such-flag" }, ExitCodes.BadArguments, "--no-such-flag")]
    [InlineData(new[] { "train", "--model", "somewhere" }, ExitCodes.BadArguments, "--model needs --data")]
    [InlineData(new[] { "generate", "--prompt", "x" }, ExitCodes.BadArguments, "--model")]
    [InlineData(new[] { "convert", "--in", "a.pt", "--out", "b.pt", "--format", "onnx" }, ExitCodes.BadArguments, "--format onnx")]
    public async Task BadFlagsExitWithTwoAndAOneLineMessageNamingTheFlag(string[] args, int expectedCode, string mention)
    {
        var result = await Run(args);
        Assert.Equal(expectedCode, result.Code);
        Assert.Contains(mention, result.Error);
        Assert.Single(result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", result.Error);
    }

    [Fact]
    public async Task InvalidOptionValuesNameTheOptionAndExitWithTwo()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 2, 16, seed: 1);
        var result = await Run("train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"), "--rank", "0", "--device", "cpu");
        Assert.Equal(ExitCodes.BadArguments, result.Code);
        Assert.Contains("Rank = 0", result.Error);
    }

    [Theory]
    [InlineData(new[] { "--lr-scheduler", "step" }, "--lr-scheduler step")]
    [InlineData(new[] { "--loss-type", "l3" }, "--loss-type l3")]
    [InlineData(new[] { "--loss-type", "huber", "--huber-schedule", "linear" }, "--huber-schedule linear")]
    [InlineData(new[] { "--warmup-steps", "5", "--lr-warmup-ratio", "0.1" }, "--lr-warmup-ratio")]
    [InlineData(new[] { "--lr-scheduler", "constant", "--warmup-steps", "10" }, "constant_with_warmup")]
    [InlineData(new[] { "--lr-scheduler", "constant", "--lr-warmup-ratio", "0.1" }, "WarmupRatio = 0.1")]
    [InlineData(new[] { "--lr-warmup-ratio", "2" }, "WarmupRatio = 2")]
    [InlineData(new[] { "--lr-cycles", "3" }, "LearningRateCycles = 3")]
    [InlineData(new[] { "--lr-scheduler", "cosine_with_restarts", "--lr-cycles", "0" }, "LearningRateCycles = 0")]
    [InlineData(new[] { "--lr-power", "2" }, "LearningRatePower = 2")]
    [InlineData(new[] { "--lr-scheduler", "polynomial", "--lr", "1e-4", "--lr-end", "0.01" }, "LearningRateEnd = 0.01")]
    [InlineData(new[] { "--huber-c", "0.2" }, "HuberC = 0.2")]
    [InlineData(new[] { "--loss-type", "smooth_l1", "--huber-c", "-1" }, "HuberC = -1")]
    [InlineData(new[] { "--ip-noise-gamma", "-1" }, "IpNoiseGamma = -1")]
    [InlineData(new[] { "--v-pred-like-loss", "0" }, "VPredLikeLoss = 0")]
    [InlineData(new[] { "--zero-terminal-snr" }, "ZeroTerminalSnr")]
    public async Task InvalidScheduleAndLossFlagsExitWithTwoAndOneLine(string[] flags, string mention)
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 2, 16, seed: 1);
        var result = await Run(["train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"), "--resolution", "16",
            "--max-steps", "2", "--checkpoint-every", "0", "--device", "cpu", .. flags]);
        Assert.Equal(ExitCodes.BadArguments, result.Code);
        Assert.Contains(mention, result.Error, StringComparison.Ordinal);
        Assert.Single(result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("internal error", result.Error, StringComparison.Ordinal);
        Assert.False(File.Exists(temp.File("out/lora_kohya.safetensors")));
    }

    [Fact]
    public async Task ScheduleAndLossFlagsReachTheRunAndItsKohyaMetadata()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 2, 24, seed: 1);
        var train = await Run("train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"), "--resolution", "16",
            "--max-steps", "2", "--checkpoint-every", "0", "--device", "cpu", "--lr-scheduler", "polynomial", "--lr-power", "2", "--lr-end", "1e-6",
            "--lr-warmup-ratio", "0.5", "--loss-type", "smooth_l1", "--huber-c", "0.3", "--huber-schedule", "exponential", "--debiased-estimation",
            "--ip-noise-gamma", "0.1", "--v-pred-like-loss", "0.2", "--min-snr-gamma", "5", "--noise-offset", "0.05", "--max-grad-norm", "0.5");
        Assert.True(train.Code == 0, train.Error);
        var metadata = SafetensorsReader.ReadMetadata(temp.File("out/lora_kohya.safetensors"));
        Assert.Equal("polynomial", metadata["ss_lr_scheduler"]);
        Assert.Equal("0.5", metadata["ss_lr_warmup_steps"]);
        Assert.Equal("smooth_l1", metadata["ss_loss_type"]);
        Assert.Equal("0.3", metadata["ss_huber_c"]);
        Assert.Equal("exponential", metadata["ss_huber_schedule"]);
        Assert.Equal("True", metadata["ss_debiased_estimation"]);
        Assert.Equal("0.1", metadata["ss_ip_noise_gamma"]);
        Assert.Equal("5.0", metadata["ss_min_snr_gamma"]);
        Assert.Equal("0.05", metadata["ss_noise_offset"]);
        Assert.Equal("0.5", metadata["ss_max_grad_norm"]);
    }

    [Fact]
    public async Task MissingFilesExitWithThreeNamingTheFile()
    {
        using var temp = new TempDirectory();
        var missingModel = await Run("generate", "--model", temp.File("no-model"), "--device", "cpu");
        Assert.Equal(ExitCodes.BadFiles, missingModel.Code);
        Assert.Contains("no-model", missingModel.Error);

        File.WriteAllBytes(temp.File("broken.safetensors"), new byte[] { 1, 2, 3 });
        var brokenLora = await Run("convert", "--in", temp.File("broken.safetensors"), "--out", temp.File("x.pt"), "--format", "pt");
        Assert.Equal(ExitCodes.BadFiles, brokenLora.Code);
        Assert.Contains("broken.safetensors", brokenLora.Error);
        Assert.False(File.Exists(temp.File("x.pt")));
    }

    /// <summary>
    /// The fixture's scheduler is SD 1.5's PNDM (PLMS): 1 step is one UNet evaluation at timestep 1, 2 steps are three
    /// (501, 1, 1), and the progress line counts evaluations, never past its total.
    /// </summary>
    [Theory]
    [InlineData("1", 1)]
    [InlineData("2", 3)]
    [InlineData("3", 4)]
    public async Task GenerateWithThePndmOfTheModelCountsUNetEvaluations(string steps, int evaluations)
    {
        using var temp = new TempDirectory();
        var result = await Run("generate", "--model", FixturePaths.TinyPipeline, "--prompt", "a sketch", "--steps", steps, "--seed", "3",
            "--out", temp.File("images"), "--device", "cpu");
        Assert.True(result.Code == 0, result.Error);
        Assert.True(File.Exists(temp.File("images/3-0.png")));
        var progress = result.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => l.StartsWith("generate ", StringComparison.Ordinal)).ToList();
        Assert.Equal($"generate {evaluations}/{evaluations}", progress[^1]);
        Assert.All(progress, line =>
        {
            var parts = line["generate ".Length..].Split('/');
            Assert.True(int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture) <= int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture), line);
        });
    }

    [Theory]
    [InlineData(new[] { "--steps", "0" }, "Steps = 0")]
    [InlineData(new[] { "--steps", "1001" }, "Steps = 1001")]
    [InlineData(new[] { "--guidance", "NaN" }, "GuidanceScale = NaN")]
    [InlineData(new[] { "--width", "17" }, "Width = 17")]
    [InlineData(new[] { "--count", "0" }, "ImageCount = 0")]
    [InlineData(new[] { "--scheduler", "ddim", "--karras" }, "karrasSigmas")]
    [InlineData(new[] { "--karras" }, "--karras")]
    [InlineData(new[] { "--scheduler", "lms" }, "Unknown scheduler 'lms'")]
    public async Task BadGenerateOptionsExitWithTwoAndOneLineNamingTheOption(string[] flags, string mention)
    {
        using var temp = new TempDirectory();
        var result = await Run(["generate", "--model", FixturePaths.TinyPipeline, "--out", temp.File("images"), "--device", "cpu", .. flags]);
        Assert.Equal(ExitCodes.BadArguments, result.Code);
        Assert.Contains(mention, result.Error, StringComparison.Ordinal);
        Assert.Single(result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("Exception", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("internal error", result.Error, StringComparison.Ordinal);
        Assert.False(Directory.Exists(temp.File("images")));
    }
}
