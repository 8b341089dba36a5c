using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;

namespace StableLora.IO;

/// <summary>
/// The one PNG writer of generated images (<see cref="GenerationResult"/> and <see cref="GeneratedImage"/>): 8-bit RGB
/// with the A1111 <c>parameters</c> text chunk, uncompressed (tEXt) so that A1111 and other readers find it.
/// </summary>
internal static class PngOutput
{
    /// <summary>Writes <paramref name="pixels"/> as a PNG with <paramref name="parameters"/> to <paramref name="stream"/>, left open.</summary>
    public static void Write(RgbImage pixels, GenerationParameters parameters, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var image = pixels.ToImageSharp();
        var png = image.Metadata.GetPngMetadata();
        png.TextData.Add(new PngTextData(GenerationParameters.PngKeyword, parameters.ToA1111Text(), "", ""));
        image.SaveAsPng(stream, new PngEncoder { TextCompressionThreshold = int.MaxValue });
    }

    /// <summary>The bytes of the PNG file <see cref="Write"/> writes.</summary>
    public static byte[] ToBytes(RgbImage pixels, GenerationParameters parameters)
    {
        using var memory = new MemoryStream();
        Write(pixels, parameters, memory);
        return memory.ToArray();
    }

    /// <summary>
    /// Writes the PNG to <paramref name="path"/> atomically (a reader never sees a partial file); <see cref="AtomicFile.Write"/>
    /// creates the folders.
    /// </summary>
    public static void Save(RgbImage pixels, GenerationParameters parameters, string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        AtomicFile.Write(path, stream => Write(pixels, parameters, stream));
    }
}
