using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Generation;

/// <summary>Images out of a call without touching the disk: PNG to a stream or bytes, plain pixels.</summary>
public sealed class OutputWithoutFilesTests
{
    [Fact]
    public void StreamBytesFileAndPixelsHoldTheSameImage()
    {
        using var temp = new TempDirectory();
        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim).WithDevice("cpu").Build();
        using var result = generator.Generate("a boat", new GenerationOptions { Steps = 2, Seed = 3, Width = 24, Height = 16, ImageCount = 2 });

        string file = temp.File("boat.png");
        result.SavePng(1, file);
        using (var memory = new MemoryStream())
        {
            memory.WriteByte(0x42);
            result.WritePng(1, memory);
            Assert.Equal(File.ReadAllBytes(file), memory.ToArray().Skip(1).ToArray());
        }

        Assert.Equal(File.ReadAllBytes(file), result.ToPngBytes(1));
        Assert.Equal(result.Parameters.ToA1111Text(), GenerationResult.ReadParameters(file)!.ToA1111Text());

        var pixels = result.GetPixels(1);
        Assert.Equal((24, 16), (pixels.Width, pixels.Height));
        using var decoded = Image.Load<Rgb24>(file);
        using var fromPixels = pixels.ToImageSharp();
        for (int y = 0; y < 16; y++)
        {
            for (int x = 0; x < 24; x++)
            {
                var expected = decoded[x, y];
                Assert.Equal((expected.R, expected.G, expected.B), pixels[x, y]);
                Assert.Equal(expected, fromPixels[x, y]);
            }
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => result.GetPixels(2));
        Assert.Throws<ArgumentOutOfRangeException>(() => result.ToPngBytes(-1));
        Assert.Throws<ArgumentException>(() => new RgbImage(2, 2, new byte[11]));
    }
}
