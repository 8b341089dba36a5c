using Microsoft.Extensions.Logging;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Generation;

/// <summary>
/// AUTOMATIC1111's long prompts and CLIP skip in generation (issue 14, item 3) on the tiny pipeline: a 100-token prompt
/// is chunked instead of truncated, clip skip changes the image and is written into the PNG's parameters text, and a
/// clip skip the text encoder cannot give is refused naming the option.
/// </summary>
public sealed class LongPromptGenerationTests
{
    private static readonly string HundredTokens = string.Join(", ", Enumerable.Repeat("ink sketch of a lighthouse", 20));

    private static StableDiffusionGenerator Tiny(ILogger? logger = null)
    {
        var builder = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.DpmSolverMultistep).WithDevice("cpu");
        if (logger is not null)
            builder.WithLogger(logger);
        return builder.Build();
    }

    private static GenerationOptions Options => new() { Width = 16, Height = 16, Steps = 2, Seed = 3, NegativePrompt = "blurry" };

    [Fact]
    public void AHundredTokenPromptIsChunkedWithClipSkip2AndThePngSaysClipSkip2()
    {
        using var temp = new TempDirectory();
        var logger = new ListLogger();
        using var generator = Tiny(logger);
        Assert.True(StableLora.TextEncoder.ClipTokenizer.FromDirectory(Path.Combine(FixturePaths.TinyPipeline, "tokenizer")).Encode(HundredTokens).TokenCount > 75);
        using var result = generator.Generate(HundredTokens, Options with { ClipSkip = 2, LongPrompts = LongPromptMode.Chunk });
        Assert.DoesNotContain(logger.Entries, e => e.Level == LogLevel.Warning);
        Assert.Contains(", Clip skip: 2, ", result.Parameters.ToA1111Text(), StringComparison.Ordinal);

        var read = GenerationResult.ReadParameters(result.SaveAll(temp.Path)[0])!;
        Assert.Equal(2, read.ClipSkip);
        Assert.Equal(HundredTokens, read.Prompt);

        // Clip skip 1 writes nothing (A1111 leaves the default out) and reads back as 1.
        using var plain = generator.Generate(HundredTokens, Options with { LongPrompts = LongPromptMode.Chunk });
        Assert.DoesNotContain("Clip skip", plain.Parameters.ToA1111Text(), StringComparison.Ordinal);
        Assert.Equal(1, GenerationParameters.Parse(plain.Parameters.ToA1111Text()).ClipSkip);
        Assert.False(TensorAssert.BitEqual(result.ImageTensor, plain.ImageTensor), "clip skip 2 must change the image");
    }

    [Fact]
    public void ChunkingChangesOnlyPromptsLongerThan75Tokens()
    {
        using var generator = Tiny();
        using var shortChunked = generator.Generate("a lighthouse", Options with { LongPrompts = LongPromptMode.Chunk, ClipSkip = 2 });
        using var shortPlain = generator.Generate("a lighthouse", Options with { LongPrompts = LongPromptMode.Truncate, ClipSkip = 2 });
        TensorAssert.Identical(shortPlain.ImageTensor, shortChunked.ImageTensor, "a short prompt chunked");

        using var longChunked = generator.Generate(HundredTokens, Options with { LongPrompts = LongPromptMode.Chunk });
        using var longTruncated = generator.Generate(HundredTokens, Options with { LongPrompts = LongPromptMode.Truncate });
        using var longDefault = generator.Generate(HundredTokens, Options);
        TensorAssert.Identical(longChunked.ImageTensor, longDefault.ImageTensor, "chunking is the default");
        Assert.False(TensorAssert.BitEqual(longTruncated.ImageTensor, longChunked.ImageTensor), "a long prompt chunked must differ from it truncated");
    }

    [Fact]
    public void ClipSkipOutsideTheTextEncodersLayersIsRefusedNamingTheOption()
    {
        using var generator = Tiny();
        foreach (int bad in new[] { 0, 4 })
        {
            var error = Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", Options with { ClipSkip = bad }));
            Assert.Equal("ClipSkip", Assert.Single(error.Errors).Option);
            Assert.Contains("between 1", error.Message, StringComparison.Ordinal);
        }
    }
}
