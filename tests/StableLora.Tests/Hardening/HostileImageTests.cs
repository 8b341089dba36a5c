using System.Buffers.Binary;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Tiff;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using StableLora.Data;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Hardening;

/// <summary>
/// Odd, broken and hostile training images. Each either loads as an upright 8-bit RGB image (first frame,
/// transparency over white) or is an <see cref="InvalidImageException"/> naming the file; nothing else escapes.
/// The test images are made here with ImageSharp; those ImageSharp 2.1 cannot write (CMYK JPEG, animated WebPs)
/// are fixtures made by tools/generate_image_fixtures.sh. All show red, green, blue and white quadrants.
/// </summary>
public sealed class HostileImageTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private static readonly Rgb24 Red = new(255, 0, 0), Green = new(0, 255, 0), Blue = new(0, 0, 255), White = new(255, 255, 255);

    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    public static TheoryData<string> Formats => new() { "png", "jpg", "gif", "webp", "bmp" };

    [Theory]
    [MemberData(nameof(Formats))]
    public void EveryFormatLoadsUpright(string format)
    {
        string path = Write($"ok.{format}", Encode(Quadrants<Rgba32>(24, 16), Encoder(format)));
        using var image = ImageFiles.LoadRgb(path);
        AssertQuadrants(image, 24, 16, tolerance: format is "jpg" or "webp" ? 40 : 0);
    }

    [Fact]
    public void ZeroByteFileIsReportedByName()
    {
        string path = Write("empty.png", Array.Empty<byte>());
        Assert.Contains("the file is empty", Refused(path).Message);
        Assert.Contains("the file is empty", Assert.Throws<InvalidImageException>(() => ImageFiles.Probe(path)).Message);
    }

    [Fact]
    public void MissingFileIsReportedByName() => Assert.Contains("does not exist", Refused(_temp.File("gone.png")).Message);

    [Fact]
    public void TextNamedPngIsReportedByName()
    {
        string path = Write("notes.png", "these are not pixels"u8.ToArray());
        Assert.Contains("not an image in a format StableLora reads", Refused(path).Message);
    }

    [Fact]
    public void ThePixelsDecideTheFormatNotTheExtension()
    {
        string pngNamedJpg = Write("really-a-png.jpg", Encode(Quadrants<Rgba32>(16, 16), new PngEncoder()));
        string jpgNamedPng = Write("really-a-jpeg.png", Encode(Quadrants<Rgba32>(16, 16), new JpegEncoder { Quality = 100 }));
        string gifNamedWebp = Write("really-a-gif.webp", Encode(Quadrants<Rgba32>(16, 16), new GifEncoder()));
        using (var image = ImageFiles.LoadRgb(pngNamedJpg))
            AssertQuadrants(image, 16, 16, tolerance: 0);
        using (var image = ImageFiles.LoadRgb(jpgNamedPng))
            AssertQuadrants(image, 16, 16, tolerance: 40);
        using (var image = ImageFiles.LoadRgb(gifNamedWebp))
            AssertQuadrants(image, 16, 16, tolerance: 0);
    }

    [Fact]
    public void FormatsStableLoraDoesNotReadAreReportedEvenUnderAnImageExtension()
    {
        // ImageSharp decodes TIFF, but a training folder never reaches that (large, rarely needed) decoder.
        string path = Write("scan.png", Encode(Quadrants<Rgba32>(16, 16), new TiffEncoder()));
        Assert.Contains("not an image in a format StableLora reads", Refused(path).Message);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void EveryTruncationIsReportedOrLosesNothing(string format)
    {
        // A truncated file must never come out partly black or transparent: it is refused, except a GIF cut after
        // its first (the only used) frame, which loads complete.
        var image = format == "gif" ? TwoFrames() : Quadrants<Rgba32>(16, 16);
        byte[] bytes = Encode(image, Encoder(format));
        string path = _temp.File($"cut.{format}");
        int loaded = 0;
        for (int length = 1; length < bytes.Length; length++)
        {
            File.WriteAllBytes(path, bytes[..length]);
            try
            {
                using var decoded = ImageFiles.LoadRgb(path);
                AssertQuadrants(decoded, 16, 16, tolerance: format is "jpg" or "webp" ? 40 : 0);
                loaded++;
            }
            catch (InvalidImageException e)
            {
                Assert.Equal(path, e.ImageName);
                Assert.StartsWith(path, e.Message);
            }
        }

        if (format != "gif")
            Assert.Equal(0, loaded);
        output.WriteLine($"{format}: {bytes.Length - 1} truncations, {bytes.Length - 1 - loaded} refused, {loaded} loaded complete");
    }

    [Fact]
    public void PngDecompressionBombIsRefusedFromItsHeader()
    {
        byte[] png = Encode(Quadrants<Rgba32>(16, 16), new PngEncoder());
        // IHDR starts at byte 8: length, "IHDR", width, height, ..., CRC over type and data.
        BinaryPrimitives.WriteUInt32BigEndian(png.AsSpan(16), 100_000);
        BinaryPrimitives.WriteUInt32BigEndian(png.AsSpan(20), 100_000);
        BinaryPrimitives.WriteUInt32BigEndian(png.AsSpan(29), Crc32(png.AsSpan(12, 17)));
        string path = Write("bomb.png", png);

        long before = GC.GetTotalAllocatedBytes(precise: true);
        var error = Refused(path);
        Assert.Contains("100000x100000 is more than 64 megapixels", error.Message);
        Assert.Contains("100000x100000", Assert.Throws<InvalidImageException>(() => ImageFiles.Probe(path)).Message);
        Assert.True(GC.GetTotalAllocatedBytes(precise: true) - before < 16 << 20);
    }

    [Fact]
    public void JpegAndGifDecompressionBombsAreRefusedFromTheirHeaders()
    {
        byte[] jpeg = Encode(Quadrants<Rgba32>(16, 16), new JpegEncoder());
        int sof = IndexOf(jpeg, 0xFF, 0xC0);
        BinaryPrimitives.WriteUInt16BigEndian(jpeg.AsSpan(sof + 5), 60000);
        BinaryPrimitives.WriteUInt16BigEndian(jpeg.AsSpan(sof + 7), 60000);
        Assert.Contains("60000x60000", Refused(Write("bomb.jpg", jpeg)).Message);

        byte[] gif = Encode(Quadrants<Rgba32>(16, 16), new GifEncoder());
        BinaryPrimitives.WriteUInt16LittleEndian(gif.AsSpan(6), 65535);
        BinaryPrimitives.WriteUInt16LittleEndian(gif.AsSpan(8), 65535);
        Assert.Contains("65535x65535", Refused(Write("bomb.gif", gif)).Message);
    }

    [Fact]
    public void DecodersRunWithABoundedAllocator()
    {
        var allocator = ImageFiles.Decoding.MemoryAllocator;
        Assert.Throws<InvalidMemoryOperationException>(() => allocator.Allocate<byte>((ImageFiles.MaxAllocationMegabytes + 1) << 20).Dispose());
        allocator.Allocate<byte>(1 << 20).Dispose();
    }

    [Fact]
    public void AnimatedGifGivesItsFirstFrame()
    {
        string path = Write("animated.gif", Encode(TwoFrames(), new GifEncoder()));
        using var image = ImageFiles.LoadRgb(path);
        AssertQuadrants(image, 16, 16, tolerance: 0);
    }

    [Fact]
    public void AnimatedWebpGivesItsFirstFrame()
    {
        // ImageSharp 2.1 refuses animated WebP outright; StableLora decodes the first frame's own bitstream.
        ImageFiles.Probe(Fixture("animated.webp"));
        using (var lossless = ImageFiles.LoadRgb(Fixture("animated.webp")))
            AssertQuadrants(lossless, 16, 16, tolerance: 0);
        using (var lossyWithAlpha = ImageFiles.LoadRgb(Fixture("animated-lossy-alpha.webp")))
            AssertQuadrants(lossyWithAlpha, 16, 16, tolerance: 40);

        using var offset = ImageFiles.LoadRgb(Fixture("animated-offset.webp"));
        Assert.Equal((16, 16), (offset.Width, offset.Height));
        Assert.Equal(Red, offset[4, 4]);
        Assert.Equal(Red, offset[11, 11]);
        Assert.Equal(White, offset[2, 2]);
        Assert.Equal(White, offset[13, 13]);
    }

    [Fact]
    public void EveryTruncationOfAnAnimatedWebpIsReported()
    {
        byte[] bytes = File.ReadAllBytes(Fixture("animated.webp"));
        string path = _temp.File("cut.webp");
        for (int length = 1; length < bytes.Length; length++)
        {
            File.WriteAllBytes(path, bytes[..length]);
            Refused(path);
        }

        output.WriteLine($"{bytes.Length - 1} truncations refused");
    }

    [Fact]
    public void CmykJpegComesOutAsRgb()
    {
        using var image = ImageFiles.LoadRgb(Fixture("cmyk.jpg"));
        AssertQuadrants(image, 16, 16, tolerance: 8);
    }

    [Fact]
    public void SixteenBitPngsComeOutAsEightBitRgb()
    {
        string rgb48 = Write("rgb48.png", Encode(Quadrants<Rgb48>(16, 16), new PngEncoder { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit16 }));
        using (var image = ImageFiles.LoadRgb(rgb48))
            AssertQuadrants(image, 16, 16, tolerance: 0);

        string rgba64 = Write("rgba64.png", Encode(Quadrants<Rgba64>(16, 16), new PngEncoder { ColorType = PngColorType.RgbWithAlpha, BitDepth = PngBitDepth.Bit16 }));
        using (var image = ImageFiles.LoadRgb(rgba64))
            AssertQuadrants(image, 16, 16, tolerance: 0);

        using var gray = new Image<L16>(4, 4, new L16(0x8080));
        string l16 = Write("gray16.png", Encode(gray.CloneAs<L16>(), new PngEncoder { ColorType = PngColorType.Grayscale, BitDepth = PngBitDepth.Bit16 }));
        using var grayImage = ImageFiles.LoadRgb(l16);
        Assert.Equal(new Rgb24(128, 128, 128), grayImage[1, 1]);
    }

    [Fact]
    public void PalettePngWithTransparencyComesOutOverWhite()
    {
        var image = Quadrants<Rgba32>(16, 16);
        for (int y = 8; y < 16; y++)
            for (int x = 8; x < 16; x++)
                image[x, y] = new Rgba32(0, 0, 0, 0);
        byte[] png = Encode(image, new PngEncoder { ColorType = PngColorType.Palette });
        Assert.True(IndexOf(png, (byte)'t', (byte)'R', (byte)'N', (byte)'S') > 0, "the palette PNG has a tRNS chunk");
        using var loaded = ImageFiles.LoadRgb(Write("palette.png", png));
        AssertQuadrants(loaded, 16, 16, tolerance: 0);
    }

    [Fact]
    public void SemiTransparentPixelsAreBlendedOverWhite()
    {
        using var image = new Image<Rgba32>(2, 2, new Rgba32(0, 0, 0, 128));
        using var loaded = ImageFiles.LoadRgb(Write("half.png", Encode(image.CloneAs<Rgba32>(), new PngEncoder())));
        Assert.Equal(new Rgb24(127, 127, 127), loaded[0, 0]);
    }

    public static TheoryData<ushort, string> Orientations()
    {
        var data = new TheoryData<ushort, string>();
        foreach (ushort orientation in Enumerable.Range(1, 8))
            foreach (string format in new[] { "jpg", "png" })
                data.Add(orientation, format);
        return data;
    }

    [Theory]
    [MemberData(nameof(Orientations))]
    public void EveryExifOrientationComesOutUpright(ushort orientation, string format)
    {
        // Store the pixels as a camera would for this orientation, then expect the upright 24x16 picture back.
        var stored = Quadrants<Rgba32>(24, 16);
        stored.Mutate(x =>
        {
            switch (orientation)
            {
                case 2: x.Flip(FlipMode.Horizontal); break;
                case 3: x.Rotate(RotateMode.Rotate180); break;
                case 4: x.Flip(FlipMode.Vertical); break;
                case 5: x.Rotate(RotateMode.Rotate90).Flip(FlipMode.Horizontal); break; // transpose
                case 6: x.Rotate(RotateMode.Rotate270); break;
                case 7: x.Rotate(RotateMode.Rotate270).Flip(FlipMode.Horizontal); break; // transverse
                case 8: x.Rotate(RotateMode.Rotate90); break;
            }
        });
        stored.Metadata.ExifProfile = new ExifProfile();
        stored.Metadata.ExifProfile.SetValue(ExifTag.Orientation, orientation);
        string path = Write($"orientation{orientation}.{format}", Encode(stored, Encoder(format)));

        using var image = ImageFiles.LoadRgb(path);
        AssertQuadrants(image, 24, 16, tolerance: format == "jpg" ? 40 : 0);
    }

    [Fact]
    public async Task OneBadImageDoesNotStopTrainingWhenSkippingIsOn()
    {
        string folder = _temp.File("dataset");
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(folder, "a-good.png"), Encode(Quadrants<Rgba32>(16, 16), new PngEncoder()));
        var noise = new Image<Rgba32>(64, 64);
        var random = new Random(3);
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++)
                noise[x, y] = new Rgba32((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256));
        byte[] jpeg = Encode(noise, new JpegEncoder());
        string truncated = Path.Combine(folder, "b-truncated.jpg");
        File.WriteAllBytes(truncated, jpeg[..(jpeg.Length * 3 / 4)]);
        File.WriteAllBytes(Path.Combine(folder, "c-good.jpg"), jpeg);
        var dataset = new ImageFolderDataset(folder);
        ImageFiles.Probe(truncated); // its header is fine: only decoding finds the damage

        var logger = new ListLogger();
        using (var batches = new StableLora.Training.TrainingBatches(dataset, new[] { 0, 1, 2 }, 3, new PreprocessOptions(16), 7, skipUnreadable: true, logger))
        {
            batches.Start(0, 0);
            using var batch = await batches.NextAsync(CancellationToken.None);
            Assert.Equal(3, batch.Names.Length);
            Assert.DoesNotContain(truncated, batch.Names);
        }

        Assert.Contains(logger.Entries, e => e.Message.Contains(truncated, StringComparison.Ordinal));

        using var strict = new StableLora.Training.TrainingBatches(dataset, new[] { 0, 1, 2 }, 3, new PreprocessOptions(16), 7, skipUnreadable: false, new ListLogger());
        strict.Start(0, 0);
        var error = await Assert.ThrowsAsync<InvalidImageException>(async () => await strict.NextAsync(CancellationToken.None));
        Assert.Equal(truncated, error.ImageName);
    }

    private InvalidImageException Refused(string path)
    {
        var error = Assert.Throws<InvalidImageException>(() => ImageFiles.LoadRgb(path).Dispose());
        Assert.Equal(path, error.ImageName);
        Assert.StartsWith(path, error.Message);
        return error;
    }

    private string Write(string name, byte[] bytes)
    {
        string path = _temp.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static string Fixture(string name) => Path.Combine(FixturePaths.Root, "images", name);

    private static IImageEncoder Encoder(string format) => format switch
    {
        "png" => new PngEncoder(),
        "jpg" => new JpegEncoder { Quality = 100, ColorType = JpegColorType.YCbCrRatio444 },
        "gif" => new GifEncoder(),
        "webp" => new WebpEncoder { FileFormat = WebpFileFormatType.Lossy, Quality = 100 },
        "bmp" => new BmpEncoder { BitsPerPixel = BmpBitsPerPixel.Pixel24 },
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    private static Image<TPixel> Quadrants<TPixel>(int width, int height)
        where TPixel : unmanaged, IPixel<TPixel>
    {
        var image = new Image<TPixel>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                var colour = (x < width / 2, y < height / 2) switch
                {
                    (true, true) => Red,
                    (false, true) => Green,
                    (true, false) => Blue,
                    _ => White,
                };
                var pixel = default(TPixel);
                pixel.FromRgb24(colour);
                image[x, y] = pixel;
            }

        return image;
    }

    private static Image<Rgba32> TwoFrames()
    {
        var image = Quadrants<Rgba32>(16, 16);
        using var second = new Image<Rgba32>(16, 16, new Rgba32(0, 0, 0));
        image.Frames.AddFrame(second.Frames.RootFrame);
        return image;
    }

    private static void AssertQuadrants(Image<Rgb24> image, int width, int height, int tolerance)
    {
        Assert.Equal((width, height), (image.Width, image.Height));
        AssertNear(Red, image[width / 4, height / 4], tolerance);
        AssertNear(Green, image[3 * width / 4, height / 4], tolerance);
        AssertNear(Blue, image[width / 4, 3 * height / 4], tolerance);
        AssertNear(White, image[3 * width / 4, 3 * height / 4], tolerance);
    }

    private static void AssertNear(Rgb24 expected, Rgb24 actual, int tolerance)
    {
        Assert.True(Math.Abs(expected.R - actual.R) <= tolerance && Math.Abs(expected.G - actual.G) <= tolerance && Math.Abs(expected.B - actual.B) <= tolerance,
            $"expected {expected}, got {actual}");
    }

    private static byte[] Encode(Image image, IImageEncoder encoder)
    {
        using (image)
        {
            using var memory = new MemoryStream();
            image.Save(memory, encoder);
            return memory.ToArray();
        }
    }

    private static int IndexOf(byte[] data, params byte[] pattern) => data.AsSpan().IndexOf(pattern);

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }

        return ~crc;
    }
}
