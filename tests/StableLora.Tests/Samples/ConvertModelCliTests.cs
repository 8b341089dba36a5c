using StableLora.Samples.Cli;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Samples;

/// <summary><c>stablelora convert</c> converts models too (issue 16, item 13): folder to single file and back generates the same image.</summary>
public sealed class ConvertModelCliTests
{
    [Fact]
    public async Task AFolderToASingleFileAndBackGeneratesTheSameImage()
    {
        using var temp = new TempDirectory();
        var toFile = await CliRunner.RunAsync("convert", "--in", FixturePaths.TinyPipeline, "--out", temp.File("tiny.safetensors"), "--format", "single-file");
        Assert.True(toFile.Code == 0, toFile.Error);
        Assert.True(File.Exists(temp.File("tiny.safetensors")));

        var toFolder = await CliRunner.RunAsync("convert", "--in", temp.File("tiny.safetensors"), "--out", temp.File("tiny"), "--format", "diffusers",
            "--config", FixturePaths.TinyPipeline);
        Assert.True(toFolder.Code == 0, toFolder.Error);
        Assert.True(File.Exists(temp.File("tiny/unet/config.json")));

        async Task<byte[]> Generate(string model, string output)
        {
            var run = await CliRunner.RunAsync("generate", "--model", model, "--prompt", "a sketch", "--steps", "2", "--seed", "3", "--width", "16", "--height", "16",
                "--out", temp.File(output), "--device", "cpu");
            Assert.True(run.Code == 0, run.Error);
            var image = Directory.GetFiles(temp.File(output), "*.png").Single();
            using var png = SixLabors.ImageSharp.Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(image);
            var pixels = new byte[png.Width * png.Height * 3];
            png.CopyPixelDataTo(pixels);
            return pixels;
        }

        Assert.Equal(await Generate(FixturePaths.TinyPipeline, "original"), await Generate(temp.File("tiny"), "round-trip"));

        var again = await CliRunner.RunAsync("convert", "--in", FixturePaths.TinyPipeline, "--out", temp.File("tiny.safetensors"), "--format", "single-file");
        Assert.NotEqual(0, again.Code);
        var overwritten = await CliRunner.RunAsync("convert", "--in", FixturePaths.TinyPipeline, "--out", temp.File("tiny.safetensors"), "--format", "single-file",
            "--overwrite", "--dtype", "fp16");
        Assert.True(overwritten.Code == 0, overwritten.Error);
        var badDtype = await CliRunner.RunAsync("convert", "--in", FixturePaths.TinyPipeline, "--out", temp.File("x.safetensors"), "--format", "single-file", "--dtype", "fp8");
        Assert.Equal(ExitCodes.BadArguments, badDtype.Code);
        Assert.Contains("--dtype fp8", badDtype.Error, StringComparison.Ordinal);
    }
}
