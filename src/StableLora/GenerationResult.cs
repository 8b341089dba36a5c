using System.Globalization;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.IO;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora;

/// <summary>
/// The images of one <see cref="StableDiffusionGenerator.Generate"/> call and what made them, as pixels
/// (<see cref="GetPixels"/>), ImageSharp images and PNGs. TorchSharp users reach the float tensor through
/// <see cref="Advanced.TensorAccess.GetImageTensor"/>.
/// </summary>
public sealed class GenerationResult : IDisposable
{
    internal GenerationResult(Tensor images, ulong seed, GenerationParameters parameters)
    {
        ImageTensor = images;
        Seed = seed;
        Parameters = parameters;
    }

    /// <summary>The images as float32 [count, height, width, 3] in [0, 1] on the CPU (diffusers' <c>output_type="np"</c>); owned by this result.</summary>
    internal Tensor ImageTensor { get; }

    /// <summary>How many images there are.</summary>
    public int Count => (int)ImageTensor.shape[0];

    /// <summary>The seed used (drawn at random when none was given).</summary>
    public ulong Seed { get; }

    /// <summary>Prompt, settings and model, as written into saved PNGs.</summary>
    public GenerationParameters Parameters { get; }

    /// <summary>
    /// Image <paramref name="index"/> as 8-bit RGB, quantised as diffusers' <c>numpy_to_pil</c> does:
    /// round(x * 255) with ties to even.
    /// </summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public Image<Rgb24> ToImage(int index) => GetPixels(index).ToImageSharp();

    /// <summary>
    /// Image <paramref name="index"/> as plain 8-bit RGB pixels, quantised as diffusers' <c>numpy_to_pil</c> does:
    /// round(x * 255) with ties to even. No TorchSharp or ImageSharp types.
    /// </summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public RgbImage GetPixels(int index)
    {
        CheckIndex(index);
        using var scope = NewDisposeScope();
        var levels = ImageTensor[index].Times(255f).round().Clamp(0, 255).to(ScalarType.Byte).contiguous();
        return new RgbImage((int)levels.shape[1], (int)levels.shape[0], levels.bytes.ToArray());
    }

    /// <summary>
    /// Image <paramref name="index"/> on its own, as <see cref="StableDiffusionGenerator.GenerateStreamAsync"/> yields it:
    /// its pixels, this result's seed and parameters, no tensor (it outlives this result).
    /// </summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    internal GeneratedImage GetImage(int index) => new(index, Seed, GetPixels(index), Parameters);

    /// <summary>Writes image <paramref name="index"/> as a PNG with the A1111 <c>parameters</c> text chunk.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <param name="path">The file to write (folders are created); it is replaced in one step, so a reader never sees a partial file.</param>
    public void SavePng(int index, string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        PngOutput.Save(GetPixels(index), Parameters, path);
    }

    /// <summary>Writes image <paramref name="index"/> as a PNG, with the A1111 <c>parameters</c> text chunk, to <paramref name="stream"/> (an HTTP response, a blob, memory).</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <param name="stream">A writable stream; it is written from its current position and left open.</param>
    public void WritePng(int index, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        PngOutput.Write(GetPixels(index), Parameters, stream);
    }

    /// <summary>Image <paramref name="index"/> as the bytes of a PNG file (with the A1111 <c>parameters</c> text chunk).</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public byte[] ToPngBytes(int index) => PngOutput.ToBytes(GetPixels(index), Parameters);

    private void CheckIndex(int index)
    {
        if (index < 0 || index >= Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"there are {Count} image(s)");
    }

    /// <summary>Writes every image as <c>&lt;seed&gt;-&lt;index&gt;.png</c> into <paramref name="directory"/>; returns the paths.</summary>
    /// <param name="directory">The output folder.</param>
    public IReadOnlyList<string> SaveAll(string directory)
    {
        var paths = new List<string>();
        for (int i = 0; i < Count; i++)
        {
            string path = Path.Combine(directory, $"{Seed.ToString(CultureInfo.InvariantCulture)}-{i}.png");
            SavePng(i, path);
            paths.Add(path);
        }

        return paths;
    }

    /// <summary>Reads the A1111 <c>parameters</c> of a PNG written by StableLora (or AUTOMATIC1111), or null when it has none.</summary>
    /// <param name="path">The PNG file.</param>
    public static GenerationParameters? ReadParameters(string path)
    {
        using var image = Image.Load(path);
        var text = image.Metadata.GetPngMetadata().TextData.FirstOrDefault(t => t.Keyword == GenerationParameters.PngKeyword);
        return text.Value is null ? null : GenerationParameters.Parse(text.Value);
    }

    /// <summary>Releases the image tensor (images taken from this result, <see cref="RgbImage"/>s and PNG bytes, stay valid).</summary>
    public void Dispose() => ImageTensor.Dispose();
}
