using StableLora.Data;
using StableLora.IO;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Samples;

/// <summary>--max-token-length and --clip-skip (train), --clip-skip and --truncate-prompts (generate) reach the run (issue 14, item 3).</summary>
public sealed class LongPromptCliTests
{
    [Fact]
    public async Task TrainAndGenerateFlagsReachTheKohyaMetadataAndThePngParameters()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 2, 16, seed: 1);
        var train = await CliRunner.RunAsync("train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"),
            "--resolution", "16", "--max-steps", "1", "--checkpoint-every", "0", "--device", "cpu", "--max-token-length", "150", "--clip-skip", "2");
        Assert.True(train.Code == 0, train.Error);
        var metadata = SafetensorsReader.ReadMetadata(temp.File("out/lora_kohya.safetensors"));
        Assert.Equal(("150", "2"), (metadata["ss_max_token_length"], metadata["ss_clip_skip"]));

        string prompt = string.Join(", ", Enumerable.Repeat("ink sketch of a lighthouse", 20));
        var generate = await CliRunner.RunAsync("generate", "--model", FixturePaths.TinyPipeline, "--prompt", prompt, "--steps", "2", "--seed", "1",
            "--width", "16", "--height", "16", "--out", temp.File("images"), "--device", "cpu", "--clip-skip", "2");
        Assert.True(generate.Code == 0, generate.Error);
        Assert.DoesNotContain("dropped", generate.Error, StringComparison.Ordinal);
        string png = generate.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Single(l => l.EndsWith(".png", StringComparison.Ordinal));
        Assert.Equal(2, GenerationResult.ReadParameters(png)!.ClipSkip);

        var truncated = await CliRunner.RunAsync("generate", "--model", FixturePaths.TinyPipeline, "--prompt", prompt, "--steps", "2", "--seed", "1",
            "--width", "16", "--height", "16", "--out", temp.File("truncated"), "--device", "cpu", "--truncate-prompts");
        Assert.True(truncated.Code == 0, truncated.Error);
        Assert.Contains("dropped", truncated.Out + truncated.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ABadTokenLengthExitsNamingTheOption()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("data"), 2, 16, seed: 1);
        var train = await CliRunner.RunAsync("train", "--model", FixturePaths.TinyPipeline, "--data", temp.File("data"), "--output", temp.File("out"),
            "--resolution", "16", "--max-steps", "1", "--device", "cpu", "--max-token-length", "100");
        Assert.NotEqual(0, train.Code);
        Assert.Contains("MaxTokenLength", train.Error, StringComparison.Ordinal);
    }
}
