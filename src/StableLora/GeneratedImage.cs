using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.IO;

namespace StableLora;

/// <summary>
/// One image of a generation, as <see cref="StableDiffusionGenerator.GenerateStreamAsync"/> yields it: its place in the
/// batch, its pixels and what made it. It holds no tensor and needs no disposing. Its PNG (<see cref="ToPngBytes"/>,
/// <see cref="WritePng"/>, <see cref="SavePng"/>) has the same bytes as <see cref="GenerationResult"/>'s for the same image.
/// </summary>
public sealed class GeneratedImage
{
    internal GeneratedImage(int index, ulong seed, RgbImage pixels, GenerationParameters parameters)
    {
        Index = index;
        Seed = seed;
        Pixels = pixels;
        Parameters = parameters;
    }

    /// <summary>The image's place in its batch, from 0 to <see cref="GenerationOptions.ImageCount"/> - 1.</summary>
    public int Index { get; }

    /// <summary>
    /// The seed of the call (drawn at random when none was given). A batch is one noise draw from this seed, so every image
    /// of a batch has the same seed; <see cref="Index"/> tells them apart.
    /// </summary>
    public ulong Seed { get; }

    /// <summary>
    /// The image as plain 8-bit RGB pixels, quantised as diffusers' <c>numpy_to_pil</c> does: round(x * 255) with ties to
    /// even (<see cref="GenerationResult.GetPixels"/>).
    /// </summary>
    public RgbImage Pixels { get; }

    /// <summary>Prompt, settings and model, as written into the PNG (the same for every image of a batch).</summary>
    public GenerationParameters Parameters { get; }

    /// <summary>The image as the bytes of a PNG file, with the A1111 <c>parameters</c> text chunk.</summary>
    public byte[] ToPngBytes() => PngOutput.ToBytes(Pixels, Parameters);

    /// <summary>Writes the image as a PNG, with the A1111 <c>parameters</c> text chunk, to <paramref name="stream"/> (an HTTP response, a blob, memory).</summary>
    /// <param name="stream">A writable stream; it is written from its current position and left open.</param>
    public void WritePng(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        PngOutput.Write(Pixels, Parameters, stream);
    }

    /// <summary>Writes the image as a PNG file with the A1111 <c>parameters</c> text chunk.</summary>
    /// <param name="path">The file to write (folders are created); it is replaced in one step, so a reader never sees a partial file.</param>
    public void SavePng(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        PngOutput.Save(Pixels, Parameters, path);
    }

    /// <summary>The image as an ImageSharp <see cref="Image{Rgb24}"/> (a new image; the caller disposes it).</summary>
    public Image<Rgb24> ToImage() => Pixels.ToImageSharp();
}
