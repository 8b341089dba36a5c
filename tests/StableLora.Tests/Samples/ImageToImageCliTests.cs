using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Samples;

/// <summary><c>stablelora generate --init-image FILE --strength S</c> (issue 16, item 5).</summary>
public sealed class ImageToImageCliTests
{
    private static readonly string Init = Path.Combine(FixturePaths.Root, "img2img", "init_24x16.png");

    [Fact]
    public async Task InitImageAndStrengthWriteAPngWithDenoisingStrength()
    {
        using var temp = new TempDirectory();
        var run = await CliRunner.RunAsync("generate", "--model", FixturePaths.TinyPipeline, "--prompt", "a lighthouse", "--steps", "4", "--seed", "1",
            "--init-image", Init, "--strength", "0.6", "--out", temp.File("images"), "--device", "cpu");
        Assert.True(run.Code == 0, run.Error);
        string png = run.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Single(l => l.EndsWith(".png", StringComparison.Ordinal));
        var parameters = GenerationResult.ReadParameters(png)!;
        Assert.Equal(0.6, parameters.DenoisingStrength);
        Assert.Equal((24, 16), (parameters.Width, parameters.Height));
    }

    [Theory]
    [InlineData("1.5", true, "Strength")]
    [InlineData("-1", true, "Strength")]
    [InlineData("0.5", false, "InitImage")]
    public async Task ABadStrengthExitsWithTwoAndOneLine(string strength, bool withImage, string named)
    {
        using var temp = new TempDirectory();
        var args = new List<string> { "generate", "--model", FixturePaths.TinyPipeline, "--steps", "2", "--strength", strength, "--out", temp.File("images"), "--device", "cpu" };
        if (withImage)
            args.AddRange(new[] { "--init-image", Init });
        var run = await CliRunner.RunAsync(args.ToArray());
        Assert.Equal(2, run.Code);
        Assert.Contains(named, run.Error, StringComparison.Ordinal);
        Assert.Single(run.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    [Fact]
    public async Task AnUnreadableInitImageExitsWithTwo()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("not-an-image.png"), "hello");
        var run = await CliRunner.RunAsync("generate", "--model", FixturePaths.TinyPipeline, "--steps", "2", "--init-image", temp.File("not-an-image.png"),
            "--out", temp.File("images"), "--device", "cpu");
        Assert.Equal(2, run.Code);
        Assert.Contains("--init-image", run.Error, StringComparison.Ordinal);
    }
}
