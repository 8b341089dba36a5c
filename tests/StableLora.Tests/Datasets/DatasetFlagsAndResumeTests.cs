using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Data;
using StableLora.IO;
using StableLora.Samples.Cli;
using StableLora.Tests.Infrastructure;
using StableLora.Training;

namespace StableLora.Tests.Datasets;

/// <summary>The dataset flags of <c>stablelora train</c>, and caption processing resumed mid-epoch.</summary>
public sealed class DatasetFlagsAndResumeTests
{
    private static string Photos => Path.Combine(FixturePaths.Root, "photos");

    [Fact]
    public async Task TrainFlagsForBucketsCaptionsAndEpochsReachTheKohyaMetadata()
    {
        using var temp = new TempDirectory();
        var (code, _, error) = await CliRunner.RunAsync(
            "train", "--model", FixturePaths.TinyPipeline, "--data", Photos, "--output", temp.File("out"), "--resolution", "64", "--batch-size", "2",
            "--warmup-steps", "1", "--checkpoint-every", "0", "--device", "cpu", "--seed", "5", "--caption", "sks, photo, outdoor, colour",
            "--enable-buckets", "--min-bucket-reso", "32", "--max-bucket-reso", "128", "--bucket-reso-steps", "16",
            "--shuffle-caption", "--keep-tokens", "1", "--keep-tokens-separator", "|||", "--caption-dropout-rate", "0.1", "--caption-tag-dropout-rate", "0.2",
            "--caption-dropout-every-n-epochs", "3", "--caption-prefix", "best,", "--caption-suffix", ", end", "--caption-extension", ".caption", "--max-epochs", "1");

        Assert.True(code == 0, error);
        var metadata = SafetensorsReader.ReadMetadata(temp.File("out/lora_kohya.safetensors"));
        Assert.Equal("6", metadata["ss_steps"]);
        Assert.Equal("1", metadata["ss_num_epochs"]);
        Assert.Equal("1", metadata["ss_epoch"]);
        Assert.Equal("True", metadata["ss_enable_bucket"]);
        Assert.Equal(("32", "128"), (metadata["ss_min_bucket_reso"], metadata["ss_max_bucket_reso"]));
        Assert.Equal(("True", "1"), (metadata["ss_shuffle_caption"], metadata["ss_keep_tokens"]));
        Assert.Equal(("0.1", "0.2", "3"), (metadata["ss_caption_dropout_rate"], metadata["ss_caption_tag_dropout_rate"], metadata["ss_caption_dropout_every_n_epochs"]));
        Assert.Equal("{\"photos\": {\"sks\": 10, \"photo\": 10, \"outdoor\": 10, \"colour\": 10}}", metadata["ss_tag_frequency"]);
    }

    [Fact]
    public async Task ProcessedCaptionsAreSeededAndEqualWhenResumedMidEpoch()
    {
        var options = new LoraTrainingOptions
        {
            Resolution = 64, BatchSize = 2, EnableBucket = true, MinBucketReso = 32, MaxBucketReso = 128, BucketResoSteps = 16, RandomCrop = true, RandomFlip = true,
            Caption = "sks, a, b, c, d, e, f", ShuffleCaption = true, KeepTokens = 1, CaptionTagDropoutRate = 0.3, CaptionDropoutRate = 0.1, Seed = 9,
        };
        var dataset = new ImageFolderDataset(Photos);
        var all = Enumerable.Range(0, dataset.Count).ToList();
        var plan = DatasetPlan.Create(dataset, all, options, false, _ => { });

        async Task<List<(string?[] Captions, float[] Pixels)>> Read(int epoch, int position, int count)
        {
            using var batches = new TrainingBatches(dataset, all, 2, new PreprocessOptions(64, true, true), options.Seed, false, NullLogger.Instance, plan);
            batches.Start(epoch, position);
            var read = new List<(string?[], float[])>();
            for (int i = 0; i < count; i++)
            {
                using var batch = await batches.NextAsync(CancellationToken.None);
                read.Add((batch.Captions, batch.Pixels.data<float>().ToArray()));
            }

            return read;
        }

        var straight = await Read(0, 0, 10);
        var resumed = await Read(1, 1, 3);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(straight[7 + i].Captions, resumed[i].Captions);
            Assert.Equal(straight[7 + i].Pixels, resumed[i].Pixels);
        }

        var captions = straight.SelectMany(b => b.Captions).ToList();
        Assert.All(captions, c => Assert.True(c!.Length == 0 || c.StartsWith("sks", StringComparison.Ordinal), c));
        Assert.True(captions.Distinct().Count() > 5);
        Assert.Equal(captions, (await Read(0, 0, 10)).SelectMany(b => b.Captions));
    }

    [Fact]
    public async Task EpochCheckpointsComeAtEpochEndsAndEveryStepReportsItsDataWait()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("sketches"), count: 5, size: 24, seed: 4);
        var progress = new List<TrainingProgress>();
        var result = await LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = temp.File("sketches"), OutputDirectory = temp.File("out"), Resolution = 16, BatchSize = 2, GradientAccumulationSteps = 2, MaxEpochs = 3,
                WarmupSteps = 0, CheckpointEvery = 0, Device = "cpu", Seed = 1,
            })
            .WithCheckpointEveryNEpochs(2)
            .WithProgress(new SynchronousProgress<TrainingProgress>(progress.Add))
            .Build().TrainAsync();

        // 5 images in batches of 2: 3 batches an epoch, ceil(3 / 2) = 2 steps an epoch, 6 steps for 3 epochs (sd-scripts'
        // arithmetic). Micro-batches run on across epochs: the second epoch ends in step 3, the fourth in step 6, the last
        // step (whose files are the final ones, not a checkpoint).
        Assert.Equal(6, result.StepsCompleted);
        Assert.Equal(new[] { "checkpoint-step-3" }, Directory.GetDirectories(temp.File("out"), "checkpoint-step-*").Select(Path.GetFileName));
        Assert.Equal(6, progress.Count);
        Assert.All(progress, p => Assert.True(p.DataWait >= TimeSpan.Zero && p.DataWait <= p.Elapsed, $"step {p.Step}: waited {p.DataWait}"));
    }
}
