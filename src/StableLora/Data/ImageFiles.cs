using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace StableLora.Data;

/// <summary>
/// Decodes image files for training, whatever their format quirks: the first frame of animations, EXIF rotation
/// applied, transparency composited over white, grayscale / CMYK / 16-bit / palette images converted to 8-bit RGB.
/// Images larger than <see cref="MaxPixels"/> are refused from their header, before any pixel is decoded.
/// </summary>
internal static class ImageFiles
{
    /// <summary>Decompression-bomb guard: 64 megapixels is far beyond any training image.</summary>
    public const long MaxPixels = 64L * 1024 * 1024;

    public static readonly IReadOnlyList<string> Extensions = new[] { ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif" };

    public static bool HasImageExtension(string path) => Extensions.Contains(Path.GetExtension(path).ToLowerInvariant());

    /// <summary>Checks an image from its header only (exists, not empty, a known format, not a decompression bomb).</summary>
    public static void Probe(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
            throw new InvalidImageException(path, "the file does not exist");
        if (info.Length == 0)
            throw new InvalidImageException(path, "the file is empty");
        try
        {
            var header = Image.Identify(path) ?? throw new InvalidImageException(path, "not an image in a format StableLora reads (png, jpg, webp, bmp, gif)");
            if ((long)header.Width * header.Height > MaxPixels)
                throw new InvalidImageException(path, $"{header.Width}x{header.Height} is more than {MaxPixels / 1024 / 1024} megapixels");
        }
        catch (Exception e) when (e is UnknownImageFormatException or InvalidImageContentException or ImageFormatException or NotSupportedException or IOException)
        {
            throw new InvalidImageException(path, $"cannot read the image header ({e.Message})", e);
        }
    }

    public static Image<Rgb24> LoadRgb(string path)
    {
        Probe(path);
        try
        {
            using var decoded = Image.Load<Rgba32>(path);
            using var firstFrame = decoded.Frames.Count > 1 ? decoded.Frames.CloneFrame(0) : decoded.Clone();
            firstFrame.Mutate(x => x.AutoOrient());
            return OverWhite(firstFrame);
        }
        catch (InvalidImageException)
        {
            throw;
        }
        catch (Exception e) when (e is UnknownImageFormatException or InvalidImageContentException or ImageFormatException or NotSupportedException or IOException)
        {
            throw new InvalidImageException(path, $"cannot decode the image ({e.Message})", e);
        }
    }

    private static Image<Rgb24> OverWhite(Image<Rgba32> image)
    {
        var result = new Image<Rgb24>(image.Width, image.Height);
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
