using System.Security.Cryptography;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace StableLora.Tests.Infrastructure;

/// <summary>Files the dataset and training tests write and compare.</summary>
internal static class TestFiles
{
    /// <summary>The SHA-256 of a file, as hex: two runs that should write the same bytes compare these.</summary>
    public static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    /// <summary>
    /// An image of uniform random RGB noise (red, green, blue drawn per pixel, row by row), in the format its extension
    /// names; with <paramref name="withAlpha"/> an RGBA image whose left half is transparent.
    /// </summary>
    public static void WriteNoise(string path, int width, int height, Random random, bool withAlpha = false)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        if (withAlpha)
        {
            using var rgba = new Image<Rgba32>(width, height);
            for (int y = 0; y < height; y++)
                for (int x = 0; x < width; x++)
                    rgba[x, y] = new Rgba32((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256), (byte)(x < width / 2 ? 0 : 255));
            rgba.Save(path);
            return;
        }

        using var rgb = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                rgb[x, y] = new Rgb24((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256));
        rgb.Save(path);
    }
}
