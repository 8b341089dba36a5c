using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace StableLora;

/// <summary>An 8-bit RGB image as plain bytes: row after row from the top, three bytes (R, G, B) per pixel.</summary>
public sealed class RgbImage
{
    /// <summary>Creates the image.</summary>
    /// <param name="width">Pixels per row.</param>
    /// <param name="height">Rows.</param>
    /// <param name="pixels">width × height × 3 bytes (kept, not copied).</param>
    public RgbImage(int width, int height, byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        if (width <= 0 || height <= 0 || pixels.Length != (long)width * height * 3)
            throw new ArgumentException($"{pixels.Length} bytes do not make a {width}x{height} RGB image", nameof(pixels));
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    /// <summary>Pixels per row.</summary>
    public int Width { get; }

    /// <summary>Rows.</summary>
    public int Height { get; }

    /// <summary>The pixels, row after row, R, G, B.</summary>
    public byte[] Pixels { get; }

    /// <summary>The pixel at (<paramref name="x"/>, <paramref name="y"/>).</summary>
    /// <param name="x">Column, from the left.</param>
    /// <param name="y">Row, from the top.</param>
    public (byte R, byte G, byte B) this[int x, int y]
    {
        get
        {
            if ((uint)x >= (uint)Width || (uint)y >= (uint)Height)
                throw new ArgumentOutOfRangeException(x < 0 || x >= Width ? nameof(x) : nameof(y), $"({x}, {y}) is outside {Width}x{Height}");
            int offset = (y * Width + x) * 3;
            return (Pixels[offset], Pixels[offset + 1], Pixels[offset + 2]);
        }
    }

    /// <summary>
    /// Reads an image file (PNG, JPEG, WebP, BMP, ... as ImageSharp reads them) as 8-bit RGB; an alpha channel is dropped.
    /// </summary>
    /// <param name="path">The image file.</param>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="UnknownImageFormatException">The file is not an image of a known format.</exception>
    /// <exception cref="InvalidImageContentException">The image data is damaged.</exception>
    public static RgbImage Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var image = Image.Load<Rgb24>(path);
        var pixels = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(pixels);
        return new RgbImage(image.Width, image.Height, pixels);
    }

    /// <summary>The same image as an ImageSharp <see cref="Image{Rgb24}"/> (a copy).</summary>
    public Image<Rgb24> ToImageSharp() => Image.LoadPixelData<Rgb24>(Pixels, Width, Height);
}
