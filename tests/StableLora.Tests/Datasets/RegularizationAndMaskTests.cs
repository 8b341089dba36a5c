using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.Data;
using StableLora.IO;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.Schedulers;
using StableLora.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Tests.Datasets;

/// <summary>
/// Regularisation images (DreamBooth prior preservation) and masked loss as sd-scripts does them: the balancing of
/// class images against training images, their loss weight, the mask arithmetic against sd-scripts' own
/// apply_masked_loss (Fixtures/losses/masked.json), masks that follow their image through crop and flip, and runs
/// that resume bit for bit with both on.
/// </summary>
public sealed class RegularizationAndMaskTests
{
    private static readonly Tolerance Float32 = new(1e-7, 2e-6);

    private static readonly Lazy<JsonDocument> MaskFixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(FixturePaths.Root, "losses", "masked.json"))));

    public static IEnumerable<object[]> MaskSources() => new[] { new object[] { "alpha_masks" }, new object[] { "conditioning_images" } };

    [Theory]
    [MemberData(nameof(MaskSources))]
    public void MaskedLossAndLossWeightsEqualSdScripts(string source)
    {
        using var scope = NewDisposeScope();
        var root = MaskFixture.Value.RootElement;
        var predicted = Tensor(root, "pred", "pred_shape");
        var target = Tensor(root, "target", "pred_shape");
        // sd-scripts: alpha / 255 as is; a conditioning image's channel 0 from [-1, 1] to [0, 1]. StableLora reads both as byte / 255.
        var masks = source == "alpha_masks"
            ? Tensor(root, "alpha", "alpha_shape").unsqueeze(1)
            : Tensor(root, "conditioning", "conditioning_shape").narrow(1, 0, 1).div(2.0).add(0.5);
        var weights = Values(root.GetProperty("loss_weights"));
        var expected = root.GetProperty("cases").EnumerateArray().Single(c => c.GetProperty("source").GetString() == source);
        using var scheduler = new DdpmScheduler(SchedulerFixture.Sd15Config());
        var timesteps = tensor(new long[] { 10, 500, 990 });

        var elementwise = LossFunctions.Elementwise(predicted, target, LossType.L2, null);
        TensorAssert.Close(Values(expected.GetProperty("masked")).reshape(predicted.shape), LossFunctions.ApplyMask(elementwise, masks), Float32, $"{source} masked");
        var perSample = LossFunctions.PerSample(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, PredictionKind.Epsilon, null, LossSettings.Default, masks, weights);
        TensorAssert.Close(Values(expected.GetProperty("weighted")), perSample, Float32, $"{source} per sample");
        var loss = LossFunctions.Compute(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, PredictionKind.Epsilon, null, LossSettings.Default, masks, weights);
        TensorAssert.Close(tensor(new[] { (float)expected.GetProperty("mean").GetDouble() }), loss.reshape(1), Float32, $"{source} mean");
    }

    [Fact]
    public void AMaskOfOnesIsNoMaskAndAZeroRegionGivesNoGradient()
    {
        using var scope = NewDisposeScope();
        using var scheduler = new DdpmScheduler(SchedulerFixture.Sd15Config());
        var generator = new Generator(7);
        var predicted = randn(new long[] { 2, 4, 8, 8 }, generator: generator).requires_grad_(true);
        var target = randn(new long[] { 2, 4, 8, 8 }, generator: generator);
        var timesteps = tensor(new long[] { 3, 700 });
        foreach (var settings in new[] { LossSettings.Default, new LossSettings(LossType.Huber, HuberSchedule: HuberSchedule.Snr) })
        {
            var plain = LossFunctions.PerSample(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, PredictionKind.Epsilon, 5.0, settings);
            var withOnes = LossFunctions.PerSample(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, PredictionKind.Epsilon, 5.0, settings,
                ones(2, 1, 64, 64), ones(2));
            TensorAssert.Identical(plain, withOnes, $"{settings.Type}: a mask and weights of ones");
        }

        // Pixels 0..31 of 64 are latents 0..3 of 8: the area resize keeps the zero region exact.
        var mask = ones(2, 1, 64, 64);
        mask[TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(0, 32)] = zeros(2, 1, 64, 32);
        var loss = LossFunctions.Compute(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, PredictionKind.Epsilon, null, LossSettings.Default, mask);
        loss.backward();
        var grad = predicted.grad!;
        Assert.Equal(0, grad.narrow(3, 0, 4).abs().max().item<float>());
        Assert.True(grad.narrow(3, 4, 4).ne(0).all().item<bool>());

        var halved = LossFunctions.PerSample(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, PredictionKind.Epsilon, null, LossSettings.Default, null, tensor(new[] { 1f, 0.5f }));
        var unweighted = LossFunctions.PerSample(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, PredictionKind.Epsilon, null, LossSettings.Default);
        TensorAssert.Identical(unweighted * tensor(new[] { 1f, 0.5f }), halved, "per-image weights");
    }

    [Theory]
    [InlineData(10, new[] { 1, 1, 1 }, new[] { 4, 3, 3 })] // fewer: one more repeat each in turn until they match
    [InlineData(3, new[] { 1, 1, 1, 1, 1 }, new[] { 1, 1, 1, 0, 0 })] // more: the first ones only ("some of reg images are not used")
    [InlineData(5, new[] { 2, 2 }, new[] { 3, 2 })]
    [InlineData(4, new[] { 3, 3 }, new[] { 3, 3 })] // the first loop takes whole repeats, so it may overshoot
    [InlineData(0, new[] { 2 }, new[] { 0 })]
    public void RegularisationImagesAreBalancedAsSdScriptsDoes(int trainCount, int[] folderRepeats, int[] expectedRepeats)
    {
        var images = Enumerable.Range(100, folderRepeats.Length).ToList();
        var entries = DatasetPlan.BalancedRegularization(images, i => folderRepeats[i - 100], trainCount).ToList();
        Assert.Equal(expectedRepeats, images.Select(i => entries.Count(e => e == i)));
        Assert.Equal(entries.OrderBy(e => e), entries);
    }

    [Fact]
    public void RegularisationFoldersJoinThePlanAndTheKohyaMetadata()
    {
        using var temp = new TempDirectory();
        WriteImage(temp.File("data/2_sks dog/a.png"), 40, 30, Color.Red);
        WriteImage(temp.File("data/2_sks dog/b.png"), 30, 30, Color.Red);
        foreach (string name in new[] { "x", "y", "z" })
            WriteImage(temp.File($"reg/1_dog/{name}.png"), 30, 40, Color.Blue);
        File.WriteAllText(temp.File("reg/1_dog/z.txt"), "dog, grass");
        var options = new LoraTrainingOptions
        {
            Model = "m", DataDirectory = temp.File("data"), OutputDirectory = temp.File("out"), Resolution = 64, BatchSize = 2,
            RegularizationDirectory = temp.File("reg"), PriorLossWeight = 0.5,
        };
        Assert.Empty(options.Validate(false));
        var dataset = DatasetPlan.Compose(DatasetPlan.OpenFolder(options), options);
        var regularized = Assert.IsType<RegularizedDataset>(dataset);
        Assert.Equal((2, 5), (regularized.TrainCount, dataset.Count));
        var plan = DatasetPlan.Create(dataset, Enumerable.Range(0, 5).ToList(), options, false, _ => { });

        Assert.Equal(new[] { 0, 0, 1, 1, 2, 2, 3, 4 }, plan.Entries);
        Assert.Equal((4, 3), (plan.TrainImageCount, plan.RegImageCount));
        Assert.Equal(4, plan.BatchesPerEpoch(2));
        Assert.Equal((1.0, 0.5), (plan.LossWeightOf(1), plan.LossWeightOf(2)));
        Assert.Equal(new[] { "dog", "dog", "dog, grass" }, Enumerable.Range(2, 3).Select(i => { using var image = dataset.Load(i); return image.Caption; }));

        var metadata = new Dictionary<string, string>();
        plan.AddMetadata(metadata, options with { MaxSteps = 8 }, 8, 1);
        Assert.Equal("4", metadata["ss_num_train_images"]);
        Assert.Equal("3", metadata["ss_num_reg_images"]);
        Assert.Equal("0.5", metadata["ss_prior_loss_weight"]);
        Assert.Equal("{\"2_sks dog\": {\"n_repeats\": 2, \"img_count\": 2}}", metadata["ss_dataset_dirs"]);
        Assert.Equal("{\"1_dog\": {\"n_repeats\": 1, \"img_count\": 3}}", metadata["ss_reg_dataset_dirs"]);
        Assert.Equal("{\"2_sks dog\": {\"sks dog\": 2}, \"1_dog\": {\"dog\": 3, \"grass\": 1}}", metadata["ss_tag_frequency"]);
    }

    [Fact]
    public async Task RegularisationImagesAtWeightZeroGiveNoGradientAndTrainingImagesDo()
    {
        using var temp = new TempDirectory();
        WriteImage(temp.File("data/a.png"), 64, 64, Color.Red);
        WriteImage(temp.File("data/b.png"), 64, 64, Color.Red);
        WriteImage(temp.File("reg/1_person/x.png"), 64, 64, Color.Blue);
        WriteImage(temp.File("reg/1_person/y.png"), 64, 64, Color.Blue);
        var isReg = new Dictionary<long, bool>();
        var zeroGradients = new Dictionary<long, bool>();
        var result = await LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = temp.File("data"), OutputDirectory = temp.File("out"), Resolution = 64, BatchSize = 1, MaxSteps = 8, WarmupSteps = 0,
                CheckpointEvery = 0, Device = "cpu", Seed = 4, RegularizationDirectory = temp.File("reg"), PriorLossWeight = 0,
            })
            .WithHooks(new TrainingHooks
            {
                BeforeMicroStep = (step, pixels) => isReg[step] = pixels[0, 2].mean().item<float>() > pixels[0, 0].mean().item<float>(),
                BeforeOptimizerStep = (step, parameters) => zeroGradients[step] = parameters.All(p => p.grad is null || p.grad.abs().max().item<float>() == 0),
            })
            .Build().TrainAsync();

        Assert.Equal(8, result.StepsCompleted);
        Assert.Equal(4, isReg.Values.Count(r => r));
        Assert.All(isReg, step => Assert.True(step.Value == zeroGradients[step.Key], $"step {step.Key}: regularisation {step.Value}, zero gradients {zeroGradients[step.Key]}"));
        var metadata = SafetensorsReader.ReadMetadata(result.KohyaWeightsPath);
        Assert.Equal(("2", "2", "0.0"), (metadata["ss_num_train_images"], metadata["ss_num_reg_images"], metadata["ss_prior_loss_weight"]));
    }

    [Fact]
    public async Task TransparentImagesGiveNoGradientUnderMaskedLoss()
    {
        using var temp = new TempDirectory();
        WriteImage(temp.File("data/clear.png"), 64, 64, Color.Red.WithAlpha(0));
        WriteImage(temp.File("data/opaque.png"), 64, 64, Color.Green);
        var zeroByColour = new List<(bool Clear, bool Zero)>();
        bool clear = false;
        await LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = temp.File("data"), OutputDirectory = temp.File("out"), Resolution = 64, BatchSize = 1, MaxSteps = 6, WarmupSteps = 0,
                CheckpointEvery = 0, Device = "cpu", Seed = 2,
            })
            .WithMaskedLoss()
            .WithHooks(new TrainingHooks
            {
                // Transparent pixels are composited over white.
                BeforeMicroStep = (_, pixels) => clear = pixels.min().item<float>() > 0.99f,
                BeforeOptimizerStep = (_, parameters) => zeroByColour.Add((clear, parameters.All(p => p.grad is null || p.grad.abs().max().item<float>() == 0))),
            })
            .Build().TrainAsync();

        Assert.Contains(zeroByColour, s => s.Clear);
        Assert.Contains(zeroByColour, s => !s.Clear);
        Assert.All(zeroByColour, s => Assert.Equal(s.Clear, s.Zero));
    }

    [Fact]
    public void MasksFollowTheirImageThroughResizeCropAndFlip()
    {
        using var scope = NewDisposeScope();
        using var image = new Image<Rgb24>(90, 60);
        using var mask = new Image<L8>(90, 60);
        var random = new Random(3);
        for (int y = 0; y < 60; y++)
        {
            for (int x = 0; x < 90; x++)
            {
                byte value = (byte)random.Next(256);
                image[x, y] = new Rgb24(value, 0, 0);
                mask[x, y] = new L8(value);
            }
        }

        for (int seed = 0; seed < 6; seed++)
        {
            var (pixels, masks, _, _) = ImagePreprocessor.ToTensors(image, mask, new PreprocessOptions(32, RandomCrop: true, RandomFlip: true), new Random(seed));
            TensorAssert.Close(pixels.narrow(0, 0, 1).add(1).div(2), masks!, new Tolerance(0.5 / 255 + 1e-6, 0), $"square, seed {seed}");
            var bucket = new BucketSelector(false, 64, 32, 128, 16).Select(90, 60);
            var (bucketPixels, bucketMasks, _, _) = ImagePreprocessor.ToTensors(image, mask, bucket, true, true, new Random(seed));
            Assert.Equal(new long[] { 1, bucket.Height, bucket.Width }, bucketMasks!.shape);
            TensorAssert.Close(bucketPixels.narrow(0, 0, 1).add(1).div(2), bucketMasks, new Tolerance(0.5 / 255 + 1e-6, 0), $"bucket, seed {seed}");
        }
    }

    [Fact]
    public void MaskFoldersAreMatchedByNameAndSize()
    {
        using var temp = new TempDirectory();
        WriteImage(temp.File("data/10_cat/a.jpg"), 40, 30, Color.Red);
        WriteImage(temp.File("data/10_cat/b.png"), 40, 30, Color.Red);
        WriteImage(temp.File("data/10_cat/c.png"), 40, 30, Color.Red);
        WriteImage(temp.File("masks/10_cat/a.png"), 40, 30, Color.White);
        WriteImage(temp.File("masks/b.bmp"), 40, 30, Color.Black);
        WriteImage(temp.File("masks/c.png"), 20, 30, Color.White);
        var dataset = new MaskedDataset(new KohyaFolderDataset(temp.File("data")), temp.File("masks"));

        using (var a = dataset.Load(0))
            Assert.Equal(255, a.Mask![5, 5].PackedValue);
        using (var b = dataset.Load(1))
            Assert.Equal(0, b.Mask![5, 5].PackedValue);
        var wrongSize = Assert.Throws<InvalidImageException>(() => dataset.Load(2));
        Assert.Contains("c.png", wrongSize.ImageName, StringComparison.Ordinal);
        Assert.Contains("20x30", wrongSize.Message, StringComparison.Ordinal);

        File.Delete(temp.File("masks/b.bmp"));
        var missing = Assert.Throws<InvalidImageException>(() => dataset.Load(1));
        Assert.EndsWith("b.png", missing.ImageName, StringComparison.Ordinal);
        Assert.Contains("no mask", missing.Message, StringComparison.Ordinal);

        var errors = new LoraTrainingOptions { Model = "m", DataDirectory = temp.File("data"), OutputDirectory = "o", MaskDirectory = temp.File("masks"), PriorLossWeight = -1 }
            .Validate(false).Select(e => e.Option).ToList();
        Assert.Contains(nameof(LoraTrainingOptions.MaskDirectory), errors);
        Assert.Contains(nameof(LoraTrainingOptions.PriorLossWeight), errors);
    }

    [Fact]
    public async Task RepeatsBucketsCaptionsRegularisationAndMasksResumeBitForBit()
    {
        using var temp = new TempDirectory();
        var random = new Random(12);
        foreach (var (name, w, h) in new[] { ("a", 80, 48), ("b", 48, 80), ("c", 64, 64) })
            TestFiles.WriteNoise(temp.File($"data/2_sks toy/{name}.png"), w, h, random, withAlpha: true);
        File.WriteAllText(temp.File("data/2_sks toy/a.txt"), "sks toy, red, table, indoor");
        foreach (var (name, w, h) in new[] { ("x", 64, 64), ("y", 96, 32) })
            TestFiles.WriteNoise(temp.File($"reg/1_toy/{name}.png"), w, h, random, withAlpha: false);

        LoraTrainingBuilder Run(string output) => LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = temp.File("data"), OutputDirectory = temp.File(output), Resolution = 64, BatchSize = 2, MaxSteps = 8, WarmupSteps = 2,
                CheckpointEvery = 4, Device = "cpu", Seed = 21, EnableBucket = true, MinBucketReso = 32, MaxBucketReso = 128, BucketResoSteps = 16,
                ShuffleCaption = true, KeepTokens = 1, CaptionTagDropoutRate = 0.2, RandomFlip = true,
            })
            .WithRegularizationImages(temp.File("reg"), 0.7)
            .WithMaskedLoss();

        var straight = await Run("straight").Build().TrainAsync();
        var resumed = await Run("resumed").WithResume(Path.Combine(temp.File("straight"), "checkpoint-step-4")).Build().TrainAsync();
        Assert.Equal(8, resumed.StepsCompleted);
        Assert.Equal(TestFiles.Hash(straight.KohyaWeightsPath), TestFiles.Hash(resumed.KohyaWeightsPath));
        var metadata = SafetensorsReader.ReadMetadata(straight.KohyaWeightsPath);
        Assert.Equal(("6", "2", "0.7"), (metadata["ss_num_train_images"], metadata["ss_num_reg_images"], metadata["ss_prior_loss_weight"]));
        Assert.Equal("{\"1_toy\": {\"n_repeats\": 1, \"img_count\": 2}}", metadata["ss_reg_dataset_dirs"]);
    }

    [Fact]
    public async Task TrainFlagsForRegularisationAndMasksReachTheRun()
    {
        using var temp = new TempDirectory();
        WriteImage(temp.File("data/a.png"), 64, 64, Color.Red);
        WriteImage(temp.File("reg/1_thing/x.png"), 64, 64, Color.Blue);
        WriteImage(temp.File("masks/a.png"), 64, 64, Color.White);
        var (code, _, error) = await CliRunner.RunAsync(
            "train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"), "--resolution", "64", "--max-steps", "2",
            "--warmup-steps", "0", "--checkpoint-every", "0", "--device", "cpu", "--reg-data", temp.File("reg"), "--prior-loss-weight", "0.25",
            "--masked-loss", "--mask-dir", temp.File("masks"));
        Assert.True(code == 0, error);
        var metadata = SafetensorsReader.ReadMetadata(temp.File("out/lora_kohya.safetensors"));
        Assert.Equal(("1", "0.25"), (metadata["ss_num_reg_images"], metadata["ss_prior_loss_weight"]));

        (code, _, error) = await CliRunner.RunAsync(
            "train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out2"), "--mask-dir", temp.File("masks"));
        Assert.Equal(StableLora.Samples.Cli.ExitCodes.BadArguments, code);
        Assert.Contains("MaskDirectory", error, StringComparison.Ordinal);
    }

    private static Tensor Values(JsonElement array) => tensor(array.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray());

    private static Tensor Tensor(JsonElement owner, string name, string shapeName) =>
        Values(owner.GetProperty(name)).reshape(owner.GetProperty(shapeName).EnumerateArray().Select(d => d.GetInt64()).ToArray());

    private static void WriteImage(string path, int width, int height, Color colour)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var image = new Image<Rgba32>(width, height, colour.ToPixel<Rgba32>());
        image.Save(path);
    }
}
