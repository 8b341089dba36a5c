namespace StableLora.Data;

/// <summary>
/// Training images from a folder: png, jpg, jpeg, webp, bmp and gif files, sorted by path so runs are reproducible.
/// Optionally recursive, and optionally with kohya-style captions: a <c>.txt</c> file of the same name beside an image
/// holds its caption.
/// </summary>
public class ImageFolderDataset : IImageDataset
{
    private readonly string[] _files;
    private readonly bool _useCaptionFiles;
    private readonly string _captionExtension = ".txt";

    /// <summary>Lists the images of <paramref name="directory"/>.</summary>
    /// <param name="directory">The image folder.</param>
    /// <param name="recursive">Also look in sub-folders.</param>
    /// <param name="useCaptionFiles">Use <c>image.txt</c> beside <c>image.png</c> as that image's caption when present.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="InvalidDataException">The folder holds no image files.</exception>
    public ImageFolderDataset(string directory, bool recursive = false, bool useCaptionFiles = false)
        : this(directory, recursive, useCaptionFiles, ".txt")
    {
    }

    /// <summary>Lists the images of <paramref name="directory"/>, with caption files of the given extension.</summary>
    /// <param name="directory">The image folder.</param>
    /// <param name="recursive">Also look in sub-folders.</param>
    /// <param name="useCaptionFiles">Use <c>image</c> + <paramref name="captionExtension"/> beside <c>image.png</c> as that image's caption when present.</param>
    /// <param name="captionExtension">The caption files' extension (kohya's caption_extension: <c>.txt</c>, <c>.caption</c>); a missing dot is added.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="InvalidDataException">The folder holds no image files.</exception>
    public ImageFolderDataset(string directory, bool recursive, bool useCaptionFiles, string captionExtension)
    {
        ArgumentNullException.ThrowIfNull(captionExtension);
        _captionExtension = KohyaFolderDataset.NormaliseExtension(captionExtension);
        if (!System.IO.Directory.Exists(directory))
            throw new DirectoryNotFoundException($"{directory}: the dataset folder does not exist");
        Directory = Path.GetFullPath(directory);
        _useCaptionFiles = useCaptionFiles;
        _files = System.IO.Directory.EnumerateFiles(Directory, "*", recursive ? SearchOption.AllDirectories : SearchOption.TopDirectoryOnly)
            .Where(ImageFiles.HasImageExtension)
            .OrderBy(f => f, StringComparer.Ordinal)
            .ToArray();
        if (_files.Length == 0)
            throw new InvalidDataException($"{directory}: the dataset folder holds no images ({string.Join(", ", ImageFiles.Extensions)})");
    }

    /// <summary>The dataset folder (full path).</summary>
    public string Directory { get; }

    /// <inheritdoc />
    public int Count => _files.Length;

    /// <inheritdoc />
    public string NameOf(int index) => _files[index];

    /// <summary>Checks image <paramref name="index"/> from its header, without decoding its pixels.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <exception cref="InvalidImageException">The file is empty, not an image, or too large.</exception>
    public void Probe(int index) => ImageFiles.Probe(_files[index]);

    /// <inheritdoc />
    public TrainingImage Load(int index)
    {
        string file = _files[index];
        var image = ImageFiles.LoadRgb(file);
        return new TrainingImage(image, CaptionOf(index), file);
    }

    /// <summary>Image <paramref name="index"/>'s own caption (its caption file, when caption files are used), or null.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public string? CaptionOf(int index)
    {
        if (!_useCaptionFiles)
            return null;
        string captionFile = Path.ChangeExtension(_files[index], _captionExtension);
        return File.Exists(captionFile) ? File.ReadAllText(captionFile).Trim() : null;
    }
}

/// <summary>The former name of <see cref="ImageFolderDataset"/>.</summary>
[Obsolete("Use ImageFolderDataset; SketchDataset was named after the training script StableLora started from.")]
public sealed class SketchDataset : ImageFolderDataset
{
    /// <summary>Lists the images of <paramref name="directory"/>.</summary>
    /// <param name="directory">The image folder.</param>
    /// <param name="recursive">Also look in sub-folders.</param>
    /// <param name="useCaptionFiles">Use <c>image.txt</c> beside <c>image.png</c> as that image's caption when present.</param>
    public SketchDataset(string directory, bool recursive = false, bool useCaptionFiles = false)
        : base(directory, recursive, useCaptionFiles)
    {
    }
}
