using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace StableLora.Data;

/// <summary>
/// A source of training images. StableLora resizes, crops and normalises what it returns; implement this to train
/// from something other than a folder (a database, an archive, generated images).
/// </summary>
public interface IImageDataset
{
    /// <summary>How many images there are.</summary>
    int Count { get; }

    /// <summary>A name for the image at <paramref name="index"/> (a file name), used in messages.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    string NameOf(int index);

    /// <summary>Loads the image at <paramref name="index"/> as RGB, upright. The caller disposes it.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <exception cref="InvalidImageException">The image cannot be read.</exception>
    TrainingImage Load(int index);
}

/// <summary>One training image and its caption (null: use the training caption).</summary>
/// <param name="Image">The pixels, RGB, upright.</param>
/// <param name="Caption">The image's own caption (a kohya-style <c>.txt</c> beside it), or null.</param>
/// <param name="Name">The image's name for messages.</param>
public sealed record TrainingImage(Image<Rgb24> Image, string? Caption, string Name) : IDisposable
{
    /// <summary>
    /// With masked loss: each pixel's loss weight, the size of <see cref="Image"/> (0 = ignored, 255 = full weight);
    /// null weighs every pixel fully. Folder datasets fill it from the alpha channel or a mask folder.
    /// </summary>
    public Image<L8>? Mask { get; init; }

    /// <summary>Releases the pixels and the mask.</summary>
    public void Dispose()
    {
        Image.Dispose();
        Mask?.Dispose();
    }
}

/// <summary>An image that cannot be used for training, with the file named.</summary>
public sealed class InvalidImageException : StableLoraException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="name">The image file (or name).</param>
    /// <param name="message">What is wrong with it.</param>
    /// <param name="innerException">The decoder's error, if any.</param>
    public InvalidImageException(string name, string message, Exception? innerException = null)
        : base($"{name}: {message}", innerException)
    {
        ImageName = name;
    }

    /// <summary>The image at fault.</summary>
    public string ImageName { get; }
}
