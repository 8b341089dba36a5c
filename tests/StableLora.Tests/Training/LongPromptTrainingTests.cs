using StableLora.Data;
using StableLora.IO;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Training;

/// <summary>
/// sd-scripts' max_token_length and clip_skip in training (issue 14, item 3): the options are checked and named, a run
/// with both on the tiny pipeline trains (with and without text-encoder LoRA), resumes to the straight run's bytes, and
/// the kohya file records ss_max_token_length and ss_clip_skip as sd-scripts writes them.
/// </summary>
public sealed class LongPromptTrainingTests
{
    private const string LongCaption = "an old lighthouse keeper walks along the rocky shore at dawn while the sea mist slowly lifts from the water, "
        + "gulls circle above the wet stones, small boats rest on their sides waiting for the tide, masterpiece, best quality, "
        + "ink sketch, cross hatching, soft shading, high contrast, dramatic sky, wind, waves, spray, rocks, seaweed, lantern, "
        + "rope, wooden pier, distant cliffs, morning light, long shadows";

    private static LoraTrainingBuilder Tiny(TempDirectory temp, int maxSteps, string output) =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(Sketches(temp))
            .WithResolution(16)
            .WithBatchSize(2)
            .WithLearningRate(1e-3)
            .WithMaxSteps(maxSteps)
            .WithWarmupSteps(0)
            .WithRank(4)
            .WithCheckpointEvery(0)
            .WithDevice("cpu")
            .WithSeed(5)
            .WithCaption(LongCaption)
            .WithOutputDirectory(temp.File(output));

    private static string Sketches(TempDirectory temp)
    {
        string directory = temp.File("sketches");
        if (!Directory.Exists(directory))
            SketchImageGenerator.Generate(directory, count: 2, size: 16, seed: 9);
        return directory;
    }

    [Fact]
    public void BadTokenLengthAndClipSkipAreRejectedNamingTheOption()
    {
        using var temp = new TempDirectory();
        var error = Assert.Throws<InvalidOptionsException>(() => Tiny(temp, 1, "out").WithMaxTokenLength(100).WithClipSkip(0).Build());
        Assert.Contains(error.Errors, e => e.Option == "MaxTokenLength" && e.Value == "100" && e.Message.Contains("75, 150 or 225", StringComparison.Ordinal));
        Assert.Contains(error.Errors, e => e.Option == "ClipSkip" && e.Value == "0");
        foreach (int ok in new[] { 75, 150, 225 })
            Assert.DoesNotContain(Tiny(temp, 1, "out").WithMaxTokenLength(ok).Options.Validate(hasDatasetObject: false), e => e.Option == "MaxTokenLength");
    }

    [Fact]
    public async Task ClipSkipBeyondTheTextEncodersLayersIsRefusedWhenTheModelIsLoaded()
    {
        using var temp = new TempDirectory();
        var error = await Assert.ThrowsAsync<InvalidOptionsException>(() => Tiny(temp, 1, "out").WithClipSkip(4).Build().TrainAsync());
        Assert.Equal("ClipSkip", error.Errors[0].Option);
        Assert.Contains("(3)", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A150TokenClipSkip2RunWithTextEncoderLoraResumesToTheStraightRunsBytes()
    {
        using var temp = new TempDirectory();
        LoraTrainingBuilder Run(string output) => Tiny(temp, 2, output).WithMaxTokenLength(150).WithClipSkip(2).WithTextEncoderLora();
        var straight = await Run("straight").Build().TrainAsync();
        Assert.Equal(2, straight.StepsCompleted);
        Assert.True(double.IsFinite(straight.FinalLoss));

        using var cancellation = new CancellationTokenSource();
        var first = await Run("resumed").WithCheckpointEvery(100).WithObserver(new CancelAt(1, cancellation)).Build().TrainAsync(cancellation.Token);
        Assert.True(first.Cancelled);
        var second = await Run("resumed").WithResume("latest").Build().TrainAsync();
        Assert.Equal(2, second.StepsCompleted);
        Assert.True(File.ReadAllBytes(straight.KohyaWeightsPath).AsSpan().SequenceEqual(File.ReadAllBytes(second.KohyaWeightsPath)), "the resumed LoRA differs");

        var metadata = SafetensorsReader.ReadMetadata(straight.KohyaWeightsPath);
        Assert.Equal(("150", "2"), (metadata["ss_max_token_length"], metadata["ss_clip_skip"]));
    }

    [Fact]
    public async Task A225TokenClipSkip2RunWithAFrozenTextEncoderTrainsAndTheDefaultsAreWrittenAsNone()
    {
        using var temp = new TempDirectory();
        var run = await Tiny(temp, 1, "long").WithMaxTokenLength(225).WithClipSkip(2).Build().TrainAsync();
        Assert.True(double.IsFinite(run.FinalLoss));
        var metadata = SafetensorsReader.ReadMetadata(run.KohyaWeightsPath);
        Assert.Equal(("225", "2"), (metadata["ss_max_token_length"], metadata["ss_clip_skip"]));

        var plain = await Tiny(temp, 1, "plain").Build().TrainAsync();
        metadata = SafetensorsReader.ReadMetadata(plain.KohyaWeightsPath);
        Assert.Equal(("None", "None"), (metadata["ss_max_token_length"], metadata["ss_clip_skip"]));
        Assert.False(File.ReadAllBytes(run.KohyaWeightsPath).AsSpan().SequenceEqual(File.ReadAllBytes(plain.KohyaWeightsPath)));
    }
}
