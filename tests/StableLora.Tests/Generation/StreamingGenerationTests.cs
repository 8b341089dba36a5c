using StableLora.Advanced;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Generation;

/// <summary>
/// Output without files or tensors (issue 16, item 3): <see cref="StableDiffusionGenerator.GenerateStreamAsync"/> yields
/// the batch of <see cref="StableDiffusionGenerator.GenerateAsync"/> image by image, a <see cref="GeneratedImage"/>'s PNG
/// is the result's, and the advanced tensor access hands out copies. Tiny fixture model, 16 px, two or three steps.
/// </summary>
public sealed class StreamingGenerationTests
{
    private const string Prompt = "a lighthouse, ink sketch";
    private static readonly GenerationOptions Options = new() { Width = 16, Height = 16, Steps = 2, Seed = 77, ImageCount = 3 };

    private static StableDiffusionGenerator Tiny() =>
        StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.DpmSolverMultistep).WithDevice("cpu").Build();

    private static async Task<List<GeneratedImage>> Collect(IAsyncEnumerable<GeneratedImage> images)
    {
        var list = new List<GeneratedImage>();
        await foreach (var image in images)
            list.Add(image);
        return list;
    }

    [Fact]
    public async Task StreamedImagesAreTheBatchOfGenerateAsyncBitForBit()
    {
        using var generator = Tiny();
        using var expected = await generator.GenerateAsync(Prompt, Options);
        var reports = new List<GenerationProgress>();
        var streamed = await Collect(generator.GenerateStreamAsync(Prompt, Options, new SynchronousProgress<GenerationProgress>(reports.Add)));

        Assert.Equal(new[] { 0, 1, 2 }, streamed.Select(i => i.Index));
        for (int i = 0; i < expected.Count; i++)
        {
            var pixels = expected.GetPixels(i);
            Assert.Equal((pixels.Width, pixels.Height), (streamed[i].Pixels.Width, streamed[i].Pixels.Height));
            Assert.Equal(pixels.Pixels, streamed[i].Pixels.Pixels);
            Assert.Equal(expected.Seed, streamed[i].Seed);
            Assert.Equal(expected.Parameters.ToA1111Text(), streamed[i].Parameters.ToA1111Text());
        }

        // One noise draw for the batch still gives each image its own noise: the indices are not copies of one image.
        Assert.NotEqual(streamed[0].Pixels.Pixels, streamed[1].Pixels.Pixels);
        Assert.Equal(generator.ModelEvaluationCount(Options.Steps), reports.Count);
        Assert.Equal(reports.Count, reports[^1].Step);
    }

    [Fact]
    public async Task AStreamedImagesPngIsTheResultsPngAndTheFileSavePngWrites()
    {
        using var temp = new TempDirectory();
        using var generator = Tiny();
        var options = Options with { ImageCount = 2 };
        using var result = generator.Generate(Prompt, options);
        var streamed = await Collect(generator.GenerateStreamAsync(Prompt, options));
        Assert.Equal(2, streamed.Count);
        foreach (var image in streamed)
        {
            byte[] png = image.ToPngBytes();
            Assert.Equal(result.ToPngBytes(image.Index), png);

            using (var stream = new MemoryStream())
            {
                image.WritePng(stream);
                Assert.Equal(png, stream.ToArray());
            }

            string path = temp.File(Path.Combine("streamed", "nested", $"{image.Index}.png"));
            image.SavePng(path);
            Assert.Equal(png, File.ReadAllBytes(path));
            string fromResult = temp.File(Path.Combine("result", $"{image.Index}.png"));
            result.SavePng(image.Index, fromResult);
            Assert.Equal(png, File.ReadAllBytes(fromResult));
            Assert.Equal(image.Parameters.ToA1111Text(), GenerationResult.ReadParameters(path)!.ToA1111Text());

            using var decoded = image.ToImage();
            using var expected = result.ToImage(image.Index);
            var decodedPixels = new byte[decoded.Width * decoded.Height * 3];
            var expectedPixels = new byte[expected.Width * expected.Height * 3];
            decoded.CopyPixelDataTo(decodedPixels);
            expected.CopyPixelDataTo(expectedPixels);
            Assert.Equal(expectedPixels, decodedPixels);
            Assert.Equal(image.Pixels.Pixels, decodedPixels);
        }

        // The atomic save leaves no temporary file behind.
        Assert.DoesNotContain(Directory.GetFiles(temp.File("streamed"), "*", SearchOption.AllDirectories), f => !f.EndsWith(".png", StringComparison.Ordinal));
    }

    [Fact]
    public async Task APreCancelledTokenThrowsBeforeAnythingRuns()
    {
        using var generator = Tiny();
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var reports = new List<GenerationProgress>();
        var progress = new SynchronousProgress<GenerationProgress>(reports.Add);

        // Invalid options too: they are not even checked, so nothing ran.
        var bad = Options with { Steps = 0 };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Collect(generator.GenerateStreamAsync(Prompt, bad, progress, cancelled.Token)));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var image in generator.GenerateStreamAsync(Prompt, bad, progress).WithCancellation(cancelled.Token))
                Assert.Fail($"image {image.Index} was yielded");
        });
        Assert.Empty(reports);

        // The same options without a cancelled token are refused as invalid: the check above really was skipped.
        await Assert.ThrowsAsync<InvalidOptionsException>(() => Collect(generator.GenerateStreamAsync(Prompt, bad)));
    }

    [Fact]
    public async Task ATokenCancelledMidwayThrowsAndYieldsNothing()
    {
        using var generator = Tiny();
        using var cancellation = new CancellationTokenSource();
        var reports = new List<GenerationProgress>();
        var progress = new SynchronousProgress<GenerationProgress>(p =>
        {
            reports.Add(p);
            cancellation.Cancel();
        });
        var yielded = new List<GeneratedImage>();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var image in generator.GenerateStreamAsync(Prompt, Options with { Steps = 3 }, progress, cancellation.Token))
                yielded.Add(image);
        });
        Assert.Single(reports);
        Assert.Empty(yielded);
    }

    [Fact]
    public void GetImageTensorReturnsACopyThatTheCallerOwns()
    {
        using var generator = Tiny();
        using var result = generator.Generate(Prompt, Options with { ImageCount = 1 });
        byte[] before = result.ToPngBytes(0);
        var copy = result.GetImageTensor();
        Assert.Equal(new long[] { 1, 16, 16, 3 }, copy.shape);
        TensorAssert.Identical(result.ImageTensor, copy, "the copy");
        copy.zero_();
        Assert.False(TensorAssert.BitEqual(result.ImageTensor, copy), "writing to the copy changed the result's images");
        copy.Dispose();
        Assert.Equal(before, result.ToPngBytes(0));
        Assert.Equal(1, result.Count);

        var other = generator.Generate(Prompt, Options with { ImageCount = 1 });
        using var kept = other.GetImageTensor();
        other.Dispose();
        TensorAssert.Identical(result.ImageTensor, kept, "a copy outlives its result");
    }
}
