using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using ImageConfiguration = SixLabors.ImageSharp.Configuration;

namespace StableLora.Data;

/// <summary>
/// Decodes image files for training, whatever their format quirks: the first frame of animations (GIF and WebP), EXIF rotation
/// applied, transparency composited over white, grayscale / CMYK / 16-bit / palette images converted to 8-bit RGB.
/// The format comes from the file's content, not its extension. A file that cannot be used (empty, truncated, not
/// an image, too large, or anything its decoder fails on) is an <see cref="InvalidImageException"/> naming it.
/// Images larger than <see cref="MaxPixels"/> are refused from their header, before any pixel is decoded, and the
/// decoders run with a memory allocator that refuses any single buffer beyond <see cref="MaxAllocationMegabytes"/>.
/// </summary>
internal static class ImageFiles
{
    /// <summary>Decompression-bomb guard: 64 megapixels is far beyond any training image.</summary>
    public const long MaxPixels = 64L * 1024 * 1024;

    /// <summary>Files larger than this are not training images (and are not read into memory).</summary>
    public const long MaxFileBytes = 256L * 1024 * 1024;

    /// <summary>The largest buffer a decoder may allocate: one 64-megapixel RGBA frame (256 MB) and some slack.</summary>
    public const int MaxAllocationMegabytes = 300;

    public static readonly IReadOnlyList<string> Extensions = new[] { ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif" };

    /// <summary>
    /// The decoders StableLora uses: only the five formats it reads (no TIFF, TGA or PBM decoder is reachable from a
    /// training folder), GIFs decoded to their first frame only, and a bounded allocator.
    /// </summary>
    internal static ImageConfiguration Decoding { get; } = CreateDecodingConfiguration();

    public static bool HasImageExtension(string path) => Extensions.Contains(Path.GetExtension(path).ToLowerInvariant());

    /// <summary>Checks an image from its header only (exists, not empty, a known format, not a decompression bomb).</summary>
    public static void Probe(string path)
    {
        CheckFile(path);
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
            var start = new byte[32];
            int read = stream.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
            if (AnimatedWebp.Canvas(start.AsSpan(0, read)) is { } canvas)
            {
                CheckSize(path, canvas.Width, canvas.Height);
                return;
            }

            stream.Position = 0;
            CheckHeader(path, Image.Identify(Decoding, stream));
        }
        catch (Exception e) when (e is not InvalidImageException)
        {
            throw new InvalidImageException(path, $"cannot read the image header ({Describe(e)})", e);
        }
    }

    public static Image<Rgb24> LoadRgb(string path)
    {
        using var decoded = LoadRgba(path);
        return OverWhite(decoded);
    }

    /// <summary>
    /// The image composited over white, as <see cref="LoadRgb"/>, and its alpha channel (255 everywhere for a file
    /// without one, as sd-scripts' conversion to RGBA gives).
    /// </summary>
    public static (Image<Rgb24> Rgb, Image<L8> Alpha) LoadRgbAndAlpha(string path)
    {
        using var decoded = LoadRgba(path);
        return (OverWhite(decoded), Channel(decoded, p => p.A));
    }

    /// <summary>A mask image's red channel (sd-scripts reads channel 0 of its conditioning images), upright.</summary>
    public static Image<L8> LoadRedChannel(string path)
    {
        using var decoded = LoadRgba(path);
        return Channel(decoded, p => p.R);
    }

    /// <summary>One channel of an RGBA image as a grey image.</summary>
    private static Image<L8> Channel(Image<Rgba32> image, Func<Rgba32, byte> channel)
    {
        var result = new Image<L8>(Decoding, image.Width, image.Height);
        image.ProcessPixelRows(result, (source, target) =>
        {
            for (int y = 0; y < source.Height; y++)
            {
                var from = source.GetRowSpan(y);
                var to = target.GetRowSpan(y);
                for (int x = 0; x < from.Length; x++)
                    to[x] = new L8(channel(from[x]));
            }
        });
        return result;
    }

    /// <summary>The first frame, upright, with its alpha channel, after every check of the file.</summary>
    private static Image<Rgba32> LoadRgba(string path)
    {
        CheckFile(path);
        byte[] data;
        try
        {
            data = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidImageException(path, $"cannot read the file ({e.Message})", e);
        }

        try
        {
            if (AnimatedWebp.Canvas(data) is { } canvas)
                return FirstWebpFrame(path, data, canvas.Width, canvas.Height);

            using (var header = new MemoryStream(data, writable: false))
                CheckHeader(path, Image.Identify(Decoding, header));
            if (ImageContainers.FindDamage(data) is { } damage)
                throw new InvalidImageException(path, damage);

            var decoded = Image.Load<Rgba32>(Decoding, data);
            while (decoded.Frames.Count > 1)
                decoded.Frames.RemoveFrame(decoded.Frames.Count - 1);
            decoded.Mutate(x => x.AutoOrient());
            return decoded;
        }
        catch (Exception e) when (e is not InvalidImageException)
        {
            // On hostile input ImageSharp's decoders throw far more than their documented exceptions (fuzzing found
            // NullReference, IndexOutOfRange, DivideByZero...): each is a bad image, never a reason to stop a run.
            throw new InvalidImageException(path, $"cannot decode the image ({Describe(e)})", e);
        }
    }

    private static Image<Rgba32> FirstWebpFrame(string path, byte[] data, int width, int height)
    {
        CheckSize(path, width, height);
        if (ImageContainers.FindDamage(data) is { } damage)
            throw new InvalidImageException(path, damage);
        var (still, x, y) = AnimatedWebp.FirstFrame(data) ?? throw new InvalidImageException(path, "the animated WebP has no complete frame");
        using (var header = new MemoryStream(still, writable: false))
            CheckHeader(path, Image.Identify(Decoding, header));
        var frame = Image.Load<Rgba32>(Decoding, still);
        if (x == 0 && y == 0 && frame.Width == width && frame.Height == height)
            return frame;
        using var owned = frame;
        if ((long)x + frame.Width > width || (long)y + frame.Height > height)
            throw new InvalidImageException(path, $"the animated WebP's first frame ({frame.Width}x{frame.Height} at {x},{y}) does not fit its {width}x{height} canvas");

        // A first frame smaller than the canvas: the rest of the canvas is transparent (so white, once composited).
        var canvas = new Image<Rgba32>(Decoding, width, height);
        canvas.Mutate(c => c.DrawImage(frame, new Point(x, y), 1f));
        return canvas;
    }

    private static void CheckFile(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
            throw new InvalidImageException(path, "the file does not exist");
        if (info.Length == 0)
            throw new InvalidImageException(path, "the file is empty");
        if (info.Length > MaxFileBytes)
            throw new InvalidImageException(path, $"the file is {info.Length} bytes, more than the {MaxFileBytes} an image may have");
    }

    private static void CheckHeader(string path, IImageInfo? header)
    {
        if (header is null)
            throw new InvalidImageException(path, "not an image in a format StableLora reads (png, jpg, webp, bmp, gif), whatever its extension");
        CheckSize(path, header.Width, header.Height);
    }

    private static void CheckSize(string path, int width, int height)
    {
        if (width <= 0 || height <= 0)
            throw new InvalidImageException(path, $"the header declares a {width}x{height} image");
        if ((long)width * height > MaxPixels)
            throw new InvalidImageException(path, $"{width}x{height} is more than {MaxPixels / 1024 / 1024} megapixels");
    }

    private static string Describe(Exception e) => e switch
    {
        InvalidMemoryOperationException => $"the decoder would need a buffer beyond the {MaxAllocationMegabytes} MB limit: {e.Message}",
        ImageFormatException or NotSupportedException => e.Message,
        _ => $"{e.GetType().Name}: {e.Message}",
    };

    private static ImageConfiguration CreateDecodingConfiguration()
    {
        var configuration = new ImageConfiguration(
            new PngConfigurationModule(), new JpegConfigurationModule(), new GifConfigurationModule(),
            new BmpConfigurationModule(), new WebpConfigurationModule())
        {
            MemoryAllocator = MemoryAllocator.Create(new MemoryAllocatorOptions { AllocationLimitMegabytes = MaxAllocationMegabytes }),
        };
        configuration.ImageFormatsManager.SetDecoder(GifFormat.Instance, new GifDecoder { DecodingMode = FrameDecodingMode.First });
        return configuration;
    }

    private static Image<Rgb24> OverWhite(Image<Rgba32> image)
    {
        var result = new Image<Rgb24>(Decoding, image.Width, image.Height);
        image.ProcessPixelRows(result, (source, target) =>
        {
            for (int y = 0; y < source.Height; y++)
            {
                var from = source.GetRowSpan(y);
                var to = target.GetRowSpan(y);
                for (int x = 0; x < from.Length; x++)
                {
                    var p = from[x];
                    int a = p.A;
                    to[x] = new Rgb24(Blend(p.R, a), Blend(p.G, a), Blend(p.B, a));
                }
            }
        });
        return result;
    }

    private static byte Blend(byte channel, int alpha) => (byte)((channel * alpha + 255 * (255 - alpha) + 127) / 255);
}
