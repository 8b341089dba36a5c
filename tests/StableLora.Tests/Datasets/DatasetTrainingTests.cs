using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.Data;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using static TorchSharp.torch;

namespace StableLora.Tests.Datasets;

/// <summary>
/// Buckets, repeats folders and epochs end to end: the photo fixtures in buckets at resolution 64 (every batch from
/// one bucket, each image resized and cropped to its bucket, resume bit for bit, sd-scripts' ss_bucket_info), and
/// sd-scripts' <c>&lt;repeats&gt;_&lt;name&gt;</c> folders (epoch length, class captions, metadata).
/// </summary>
public sealed class DatasetTrainingTests
{
    private static string Photos => Path.Combine(FixturePaths.Root, "photos");

    private static JsonElement PhotoFixture =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(FixturePaths.Root, "buckets", "buckets.json"))).RootElement.GetProperty("photos");

    private static LoraTrainingOptions BucketOptions(string output) => new()
    {
        Model = FixturePaths.TinyPipeline,
        DataDirectory = Photos,
        OutputDirectory = output,
        Caption = "a photo",
        Resolution = 64,
        BatchSize = 2,
        EnableBucket = true,
        MinBucketReso = 32,
        MaxBucketReso = 128,
        BucketResoSteps = 16,
        Seed = 11,
    };

    [Fact]
    public async Task PhotoBatchesComeFromOneBucketEachImageResizedAndCroppedToIt()
    {
        var fixture = PhotoFixture;
        var expectedBuckets = fixture.GetProperty("files").EnumerateArray().Select(f => f.GetString()!)
            .Zip(fixture.GetProperty("buckets").EnumerateArray().Select(b => (b[0].GetInt32(), b[1].GetInt32())))
            .ToDictionary(p => p.First, p => p.Second);
        var options = BucketOptions("unused");
        var dataset = new ImageFolderDataset(Photos);
        var plan = DatasetPlan.Create(dataset, Enumerable.Range(0, dataset.Count).ToList(), options, false, _ => { });
        Assert.Equal(6, plan.BatchesPerEpoch(2));

        using var batches = new TrainingBatches(dataset, Enumerable.Range(0, dataset.Count).ToList(), 2, new PreprocessOptions(64), options.Seed, false, NullLogger.Instance, plan);
        batches.Start(0, 0);
        var seen = new List<string>();
        for (int b = 0; b < 12; b++)
        {
            using var batch = await batches.NextAsync(CancellationToken.None);
            Assert.Equal(b < 6 ? 0 : 1, batch.Epoch);
            Assert.Equal(b % 6 + 1, batch.NextPosition);
            for (int i = 0; i < batch.Names.Length; i++)
            {
                var (w, h) = expectedBuckets[Path.GetFileName(batch.Names[i])];
                Assert.Equal(new long[] { batch.Names.Length, 3, h, w }, batch.Pixels.shape);
                using var image = dataset.Load(batch.Indices[i]);
                var choice = new BucketSelector(false, 64, 32, 128, 16).Select(image.Image.Width, image.Image.Height);
                using var expected = ImagePreprocessor.ToTensor(image.Image, choice, false, false, new Random(0));
                Assert.True(expected.eq(batch.Pixels[i]).all().item<bool>(), batch.Names[i]);
            }

            if (b < 6)
                seen.AddRange(batch.Names.Select(Path.GetFileName)!);
        }

        Assert.Equal(expectedBuckets.Keys.Order(StringComparer.Ordinal), seen.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task BucketTrainingOnPhotosResumesBitForBitAndWritesSdScriptsBucketInfo()
    {
        using var temp = new TempDirectory();
        var shapes = new List<long[]>();
        LoraTrainingBuilder Run(string output) => LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(_ => BucketOptions(temp.File(output)) with { WarmupSteps = 2, MaxSteps = 8, CheckpointEvery = 4, Device = "cpu" });

        var straight = await Run("straight").WithHooks(new TrainingHooks { BeforeMicroStep = (_, pixels) => shapes.Add(pixels.shape) }).Build().TrainAsync();
        Assert.Equal(8, shapes.Count);
        Assert.All(shapes, s => Assert.Contains((s[3], s[2]), new[] { (64L, 64L), (80L, 48L), (96L, 32L) }));
        Assert.Contains(shapes, s => s[3] != s[2]);

        var resumed = await Run("resumed").WithResume(Path.Combine(temp.File("straight"), "checkpoint-step-4")).Build().TrainAsync();
        Assert.Equal(8, resumed.StepsCompleted);
        Assert.Equal(TestFiles.Hash(straight.LoraPath), TestFiles.Hash(resumed.LoraPath));
        Assert.Equal(TestFiles.Hash(straight.KohyaWeightsPath), TestFiles.Hash(resumed.KohyaWeightsPath));

        var metadata = SafetensorsReader.ReadMetadata(straight.KohyaWeightsPath);
        Assert.Equal(PhotoFixture.GetProperty("ss_bucket_info").GetString(), metadata["ss_bucket_info"]);
        Assert.Equal("True", metadata["ss_enable_bucket"]);
        Assert.Equal("32", metadata["ss_min_bucket_reso"]);
        Assert.Equal("128", metadata["ss_max_bucket_reso"]);
        Assert.Equal("False", metadata["ss_bucket_no_upscale"]);
        Assert.Equal("10", metadata["ss_num_train_images"]);
        Assert.Equal("8", metadata["ss_steps"]);
        Assert.Equal("2", metadata["ss_num_epochs"]);
        Assert.Equal("2", metadata["ss_epoch"]);
        Assert.Equal("{\"photos\": {\"a photo\": 10}}", metadata["ss_tag_frequency"]);
        Assert.Equal("{\"photos\": {\"n_repeats\": 1, \"img_count\": 10}}", metadata["ss_dataset_dirs"]);
    }

    [Fact]
    public async Task RepeatsFoldersGiveTheEpochLengthAndClassCaptions()
    {
        using var temp = new TempDirectory();
        string data = temp.File("data");
        WriteImage(Path.Combine(data, "3_cat", "a.png"), 40, 30);
        WriteImage(Path.Combine(data, "3_cat", "b.png"), 30, 30);
        File.WriteAllText(Path.Combine(data, "3_cat", "b.caption"), "Tabby, Cat\nsecond line");
        File.WriteAllText(Path.Combine(data, "3_cat", "a.txt"), "not read: the extension is .caption");
        WriteImage(Path.Combine(data, "1_dog", "c.png"), 30, 40);
        WriteImage(Path.Combine(data, "misc", "ignored.png"), 30, 30);

        Assert.True(KohyaFolderDataset.IsKohyaLayout(data));
        var dataset = new KohyaFolderDataset(data, "caption");
        Assert.Equal(new[] { ("1_dog", 1, "dog", 1), ("3_cat", 3, "cat", 2) },
            dataset.Subsets.Select(s => (Path.GetFileName(s.Directory), s.Repeats, s.ClassCaption, s.ImageCount)));
        Assert.Equal(new[] { "dog", "cat", "Tabby, Cat" }, Enumerable.Range(0, 3).Select(dataset.CaptionOf));
        Assert.Equal(("3", "my_char"), KohyaFolderDataset.ParseName("3_my_char") is { } p ? (p.Repeats.ToString(), p.ClassCaption) : default);
        Assert.Null(KohyaFolderDataset.ParseName("0_none"));

        var options = new LoraTrainingOptions
        {
            Model = FixturePaths.TinyPipeline, DataDirectory = data, OutputDirectory = temp.File("out"), Resolution = 64, BatchSize = 2,
            CaptionExtension = ".caption", MaxEpochs = 2, WarmupSteps = 1, CheckpointEvery = 0, Device = "cpu", Seed = 3,
        };
        var plan = DatasetPlan.Create(dataset, new List<int> { 0, 1, 2 }, options, false, _ => { });
        Assert.Equal(7, plan.TrainImageCount);
        Assert.Equal(4, plan.BatchesPerEpoch(2));
        Assert.Equal(8, plan.WithEpochLength(options).MaxSteps);
        Assert.Equal(4, plan.WithEpochLength(options with { GradientAccumulationSteps = 3 }).MaxSteps);

        using (var batches = new TrainingBatches(dataset, new[] { 0, 1, 2 }, 2, new PreprocessOptions(64), 3, false, NullLogger.Instance, plan))
        {
            batches.Start(0, 0);
            var epoch = new List<string?>();
            var names = new List<string>();
            while (epoch.Count < 7)
            {
                using var batch = await batches.NextAsync(CancellationToken.None);
                Assert.Equal(0, batch.Epoch);
                epoch.AddRange(batch.Captions);
                names.AddRange(batch.Names.Select(Path.GetFileName)!);
            }

            Assert.Equal(new[] { "a.png", "a.png", "a.png", "b.png", "b.png", "b.png", "c.png" }, names.Order(StringComparer.Ordinal));
            Assert.Equal(new[] { "Tabby, Cat", "Tabby, Cat", "Tabby, Cat", "cat", "cat", "cat", "dog" }, epoch.Order(StringComparer.Ordinal));
        }

        var result = await LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline).WithOptions(_ => options).Build().TrainAsync();
        Assert.Equal(8, result.StepsCompleted);
        var metadata = SafetensorsReader.ReadMetadata(result.KohyaWeightsPath);
        Assert.Equal("7", metadata["ss_num_train_images"]);
        Assert.Equal("2", metadata["ss_num_epochs"]);
        Assert.Equal("2", metadata["ss_epoch"]);
        Assert.Equal("8", metadata["ss_steps"]);
        Assert.Equal("False", metadata["ss_enable_bucket"]);
        Assert.Equal("null", metadata["ss_bucket_info"]);
        Assert.Equal("{\"1_dog\": {\"dog\": 1}, \"3_cat\": {\"cat\": 2, \"tabby\": 1}}", metadata["ss_tag_frequency"]);
        Assert.Equal("{\"1_dog\": {\"n_repeats\": 1, \"img_count\": 1}, \"3_cat\": {\"n_repeats\": 3, \"img_count\": 2}}", metadata["ss_dataset_dirs"]);
    }

    [Fact]
    public void DatasetOptionsAreCheckedByName()
    {
        var errors = new LoraTrainingOptions
        {
            Model = "m", DataDirectory = Photos, OutputDirectory = "o", EnableBucket = true, BucketResoSteps = 12, CaptionDropoutRate = 1.5,
            CaptionTagDropoutRate = -0.1, KeepTokens = -1, MaxEpochs = 0, CaptionExtension = "",
        }.Validate(false).Select(e => e.Option).ToList();
        Assert.Contains(nameof(LoraTrainingOptions.BucketResoSteps), errors);
        Assert.Contains(nameof(LoraTrainingOptions.CaptionDropoutRate), errors);
        Assert.Contains(nameof(LoraTrainingOptions.CaptionTagDropoutRate), errors);
        Assert.Contains(nameof(LoraTrainingOptions.KeepTokens), errors);
        Assert.Contains(nameof(LoraTrainingOptions.MaxEpochs), errors);
        Assert.Contains(nameof(LoraTrainingOptions.CaptionExtension), errors);
        Assert.Equal((256, 1024), (new LoraTrainingOptions { Resolution = 512 }).BucketSides());
        Assert.Equal((32, 1024), (new LoraTrainingOptions { Resolution = 64, BucketResoSteps = 16 }).BucketSides());
    }

    [Fact]
    public void MeanAspectErrorSumsAsNumpy()
    {
        var random = new Random(5);
        foreach (int n in new[] { 1, 7, 8, 9, 17, 128, 129, 300 })
        {
            var values = Enumerable.Range(0, n).Select(_ => random.NextDouble()).ToArray();
            Assert.InRange(Math.Abs(DatasetPlan.NumpySum(values) - values.Sum()), 0, 1e-12 * n);
        }
    }

    private static void WriteImage(string path, int width, int height)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var image = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                image[x, y] = new Rgb24((byte)(x * 5), (byte)(y * 5), (byte)((x + y) * 3));
        image.SaveAsPng(path);
    }
}
