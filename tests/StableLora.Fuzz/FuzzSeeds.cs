using System.IO.Compression;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.IO;
using TorchSharp;

namespace StableLora.Fuzz;

/// <summary>
/// Small valid inputs for each fuzz target, written by StableLora's own writers and ImageSharp, so that no binary
/// seed needs to be committed: the fuzzers start from these and mutate.
/// </summary>
internal static class FuzzSeeds
{
    /// <summary>The seeds of <paramref name="target"/>; images also take the files of <paramref name="imageFixtures"/> (formats ImageSharp cannot write).</summary>
    public static IEnumerable<(string Name, byte[] Data)> For(string target, string? imageFixtures = null) => target switch
    {
        FuzzTargets.Safetensors => SafetensorsSeeds(),
        FuzzTargets.Pickle => TorchZipSeeds().Select(s => (s.Name + ".pkl", DataPkl(s.Data))),
        FuzzTargets.TorchZip => TorchZipSeeds(),
        FuzzTargets.Image => ImageSeeds().Concat(imageFixtures is not null && Directory.Exists(imageFixtures)
            ? Directory.GetFiles(imageFixtures).Order(StringComparer.Ordinal).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f)))
            : Enumerable.Empty<(string, byte[])>()),
        _ => throw new ArgumentException($"unknown fuzz target '{target}'", nameof(target)),
    };

    private static IEnumerable<(string Name, byte[] Data)> SafetensorsSeeds()
    {
        yield return ("three.safetensors", WithTempFile(".safetensors", path => SafetensorsWriter.Write(path, new Dictionary<string, torch.Tensor>
        {
            ["down.weight"] = torch.arange(6, dtype: torch.float32).reshape(2, 3),
            ["half"] = torch.ones(3, dtype: torch.float16),
            ["alpha"] = torch.tensor(4L),
        }, new Dictionary<string, string> { ["format"] = "pt", ["ss_network_dim"] = "4" })));
        yield return ("empty-and-bf16.safetensors", WithTempFile(".safetensors", path => SafetensorsWriter.Write(path, new Dictionary<string, torch.Tensor>
        {
            ["empty"] = torch.zeros(0, 4),
            ["bf"] = torch.ones(2, dtype: torch.bfloat16),
            ["mask"] = torch.ones(2, dtype: torch.@bool),
        })));
    }

    /// <summary>Every storage is 64 bytes, the size of the pickle target's records, so the pickles load there as they are.</summary>
    private static IEnumerable<(string Name, byte[] Data)> TorchZipSeeds()
    {
        yield return ("float.pt", WithTempFile(".pt", path => TorchPickleWriter.Write(path, new[]
        {
            new KeyValuePair<string, torch.Tensor>("a.weight", torch.arange(16, dtype: torch.float32).reshape(4, 4)),
            new KeyValuePair<string, torch.Tensor>("b.bias", torch.ones(16, dtype: torch.float32)),
        })));
        yield return ("mixed.pt", WithTempFile(".pt", path => TorchPickleWriter.Write(path, new[]
        {
            new KeyValuePair<string, torch.Tensor>("half", torch.ones(32, dtype: torch.float16).reshape(2, 16)),
            new KeyValuePair<string, torch.Tensor>("ids", torch.arange(8, dtype: torch.int64)),
        })));
    }

    private static byte[] DataPkl(byte[] archive)
    {
        using var zip = new ZipArchive(new MemoryStream(archive), ZipArchiveMode.Read);
        var entry = zip.Entries.Single(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal));
        using var stream = entry.Open();
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    private static IEnumerable<(string Name, byte[] Data)> ImageSeeds()
    {
        yield return ("rgb.png", Encode(Quadrants<Rgb24>(), new PngEncoder { ColorType = PngColorType.Rgb }));
        yield return ("rgba.png", Encode(Quadrants<Rgba32>(transparentCorner: true), new PngEncoder { ColorType = PngColorType.RgbWithAlpha }));
        yield return ("palette-trns.png", Encode(Quadrants<Rgba32>(transparentCorner: true), new PngEncoder { ColorType = PngColorType.Palette }));
        yield return ("gray16.png", Encode(Quadrants<L16>(), new PngEncoder { ColorType = PngColorType.Grayscale, BitDepth = PngBitDepth.Bit16 }));
        yield return ("rgb16.png", Encode(Quadrants<Rgb48>(), new PngEncoder { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit16 }));
        yield return ("baseline.jpg", Encode(Quadrants<Rgb24>(), new JpegEncoder { Quality = 90 }));
        yield return ("gray.jpg", Encode(Quadrants<L8>(), new JpegEncoder { Quality = 90, ColorType = JpegColorType.Luminance }));
        yield return ("rotated.jpg", Encode(WithOrientation(Quadrants<Rgb24>(), 6), new JpegEncoder { Quality = 90 }));
        yield return ("two-frames.gif", Encode(TwoFrames(), new GifEncoder()));
        yield return ("lossy.webp", Encode(Quadrants<Rgb24>(), new WebpEncoder { FileFormat = WebpFileFormatType.Lossy }));
        yield return ("lossless.webp", Encode(Quadrants<Rgba32>(transparentCorner: true), new WebpEncoder { FileFormat = WebpFileFormatType.Lossless }));
        yield return ("rgb.bmp", Encode(Quadrants<Rgb24>(), new BmpEncoder { BitsPerPixel = BmpBitsPerPixel.Pixel24 }));
    }

    private static Image<TPixel> Quadrants<TPixel>(bool transparentCorner = false)
        where TPixel : unmanaged, IPixel<TPixel>
    {
        var image = new Image<TPixel>(16, 16);
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
            {
                var colour = (x < 8, y < 8) switch
                {
                    (true, true) => new Rgba32(255, 0, 0),
                    (false, true) => new Rgba32(0, 255, 0),
                    (true, false) => new Rgba32(0, 0, 255),
                    _ => transparentCorner ? new Rgba32(0, 0, 0, 0) : new Rgba32(255, 255, 255),
                };
                var pixel = default(TPixel);
                pixel.FromRgba32(colour);
                image[x, y] = pixel;
            }

        return image;
    }

    private static Image<Rgb24> WithOrientation(Image<Rgb24> image, ushort orientation)
    {
        image.Metadata.ExifProfile = new ExifProfile();
        image.Metadata.ExifProfile.SetValue(ExifTag.Orientation, orientation);
        return image;
    }

    private static Image<Rgba32> TwoFrames()
    {
        var image = Quadrants<Rgba32>();
        using var second = new Image<Rgba32>(16, 16, new Rgba32(0, 0, 0));
        image.Frames.AddFrame(second.Frames.RootFrame);
        return image;
    }

    private static byte[] Encode(Image image, SixLabors.ImageSharp.Formats.IImageEncoder encoder)
    {
        using (image)
        {
            using var memory = new MemoryStream();
            image.Save(memory, encoder);
            return memory.ToArray();
        }
    }

    private static byte[] WithTempFile(string extension, Action<string> write)
    {
        string path = Path.Combine(Path.GetTempPath(), $"stablelora-seed-{Guid.NewGuid():N}{extension}");
        try
        {
            using (var scope = torch.NewDisposeScope())
                write(path);
            return File.ReadAllBytes(path);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
