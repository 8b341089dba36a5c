using SixLabors.ImageSharp;

namespace StableLora.Data;

/// <summary>
/// A dataset whose images carry a loss mask (<see cref="TrainingImage.Mask"/>), as sd-scripts' masked loss reads them:
/// the alpha channel of image files (<c>alpha_mask</c>; 255 everywhere for files without one), or the red channel of a
/// same-named file in a mask folder (its <c>conditioning_data_dir</c>). Datasets that are not folders of files keep
/// whatever mask their own <see cref="IImageDataset.Load"/> gives.
/// </summary>
internal sealed class MaskedDataset : IImageDataset
{
    private readonly IImageDataset _inner;
    private readonly string? _maskDirectory;
    private readonly string? _dataDirectory;

    /// <param name="inner">The images.</param>
    /// <param name="maskDirectory">The mask folder; null: the images' alpha channels.</param>
    public MaskedDataset(IImageDataset inner, string? maskDirectory)
    {
        _inner = inner;
        _maskDirectory = maskDirectory is null ? null : Path.GetFullPath(maskDirectory);
        _dataDirectory = inner switch
        {
            ImageFolderDataset folder => folder.Directory,
            KohyaFolderDataset kohya => kohya.Directory,
            _ => null,
        };
    }

    public IImageDataset Inner => _inner;

    public int Count => _inner.Count;

    public string NameOf(int index) => _inner.NameOf(index);

    public TrainingImage Load(int index)
    {
        if (_dataDirectory is null)
            return _inner.Load(index);

        string file = _inner.NameOf(index);
        string? caption = _inner switch
        {
            ImageFolderDataset folder => folder.CaptionOf(index),
            KohyaFolderDataset kohya => kohya.CaptionOf(index),
            _ => null,
        };
        if (_maskDirectory is null)
        {
            var (rgb, alpha) = ImageFiles.LoadRgbAndAlpha(file);
            return new TrainingImage(rgb, caption, file) { Mask = alpha };
        }

        string maskFile = MaskFileOf(file);
        var mask = ImageFiles.LoadRedChannel(maskFile);
        try
        {
            var image = ImageFiles.LoadRgb(file);
            if (image.Width != mask.Width || image.Height != mask.Height)
            {
                image.Dispose();
                throw new InvalidImageException(maskFile, $"the mask is {mask.Width}x{mask.Height} but its image {file} is {image.Width}x{image.Height}; a mask must have its image's size");
            }

            return new TrainingImage(image, caption, file) { Mask = mask };
        }
        catch
        {
            mask.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The mask of <paramref name="imageFile"/>: the file with the image's name (any image extension) at the same place
    /// under the mask folder as the image under the data folder (<c>10_cat/a.png</c>: <c>masks/10_cat/a.*</c>), else
    /// directly in the mask folder.
    /// </summary>
    internal string MaskFileOf(string imageFile)
    {
        string relative = Path.GetRelativePath(_dataDirectory!, imageFile);
        string stem = Path.GetFileNameWithoutExtension(imageFile);
        var places = new[]
        {
            Path.Combine(_maskDirectory!, Path.GetDirectoryName(relative) ?? "", stem),
            Path.Combine(_maskDirectory!, stem),
        };
        foreach (string place in places.Distinct(StringComparer.Ordinal))
        {
            string? folder = Path.GetDirectoryName(place);
            if (folder is null || !System.IO.Directory.Exists(folder))
                continue;
            var match = System.IO.Directory.EnumerateFiles(folder, Path.GetFileName(place) + ".*")
                .Where(f => ImageFiles.HasImageExtension(f) && Path.GetFileNameWithoutExtension(f) == stem)
                .OrderBy(f => f, StringComparer.Ordinal).FirstOrDefault();
            if (match is not null)
                return match;
        }

        throw new InvalidImageException(imageFile, $"no mask for this image in {_maskDirectory} (looked for {string.Join(" and ", places.Distinct(StringComparer.Ordinal).Select(p => Path.GetRelativePath(_maskDirectory!, p) + ".*"))}, any of {string.Join(", ", ImageFiles.Extensions)})");
    }
}
