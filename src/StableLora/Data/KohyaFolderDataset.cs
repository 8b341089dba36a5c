using System.Globalization;

namespace StableLora.Data;

/// <summary>One <c>&lt;repeats&gt;_&lt;name&gt;</c> sub-folder of a kohya-style dataset.</summary>
/// <param name="Directory">The sub-folder (full path).</param>
/// <param name="Repeats">How often each of its images is shown per epoch (the number before the first underscore).</param>
/// <param name="ClassCaption">The caption of its images without a caption file (the name after the first underscore).</param>
/// <param name="ImageCount">How many images it holds.</param>
public sealed record KohyaSubset(string Directory, int Repeats, string ClassCaption, int ImageCount);

/// <summary>
/// Training images in sd-scripts' DreamBooth layout: the data folder holds sub-folders named <c>&lt;repeats&gt;_&lt;name&gt;</c>
/// (<c>10_mychar</c>), each image shown <c>repeats</c> times per epoch; an image's caption is the first line of the file
/// of the same name with the caption extension beside it, else the folder's name after the repeats (the class caption).
/// Sub-folders without a number of repeats (or with fewer than 1) are left out, as sd-scripts does. Images are listed
/// per sub-folder (not recursively), sub-folders and files sorted by name.
/// </summary>
public sealed class KohyaFolderDataset : IImageDataset
{
    private readonly List<(string File, int Subset)> _images = new();
    private readonly string _captionExtension;

    /// <summary>Lists the sub-folders and images of <paramref name="directory"/>.</summary>
    /// <param name="directory">The data folder, holding <c>&lt;repeats&gt;_&lt;name&gt;</c> sub-folders.</param>
    /// <param name="captionExtension">The caption files' extension (<c>.txt</c>, <c>.caption</c>); a missing dot is added.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="InvalidDataException">No sub-folder with repeats holds images.</exception>
    public KohyaFolderDataset(string directory, string captionExtension = ".txt")
    {
        if (!System.IO.Directory.Exists(directory))
            throw new DirectoryNotFoundException($"{directory}: the dataset folder does not exist");
        Directory = Path.GetFullPath(directory);
        _captionExtension = NormaliseExtension(captionExtension);
        var folders = System.IO.Directory.EnumerateDirectories(Directory).OrderBy(f => f, StringComparer.Ordinal)
            .Select(f => (Folder: f, Parsed: ParseName(Path.GetFileName(f))))
            .Where(f => f.Parsed is not null)
            .Select(f => (f.Folder, f.Parsed!.Value.Repeats, f.Parsed.Value.ClassCaption));
        Subsets = AddSubsets(folders);
        if (_images.Count == 0)
            throw new InvalidDataException($"{directory}: no <repeats>_<name> sub-folder holds images ({string.Join(", ", ImageFiles.Extensions)})");
    }

    /// <summary>Subsets named one by one (a dataset description file's), each folder with its own repeats and class caption.</summary>
    private KohyaFolderDataset(IReadOnlyList<(string Folder, int Repeats, string ClassCaption)> subsets, string captionExtension)
    {
        _captionExtension = NormaliseExtension(captionExtension);
        var full = subsets.Select(s => (Path.GetFullPath(s.Folder), s.Repeats, s.ClassCaption)).ToList();
        Directory = full.Count == 1 ? full[0].Item1 : CommonParent(full.Select(s => s.Item1).ToList());
        Subsets = AddSubsets(full);
    }

    /// <summary>A dataset of the given folders (sd-scripts' <c>[[datasets.subsets]]</c>), in the given order.</summary>
    /// <exception cref="DirectoryNotFoundException">A folder does not exist.</exception>
    internal static KohyaFolderDataset FromSubsets(IReadOnlyList<(string Folder, int Repeats, string ClassCaption)> subsets, string captionExtension)
    {
        foreach (var subset in subsets)
        {
            if (!System.IO.Directory.Exists(subset.Folder))
                throw new DirectoryNotFoundException($"{subset.Folder}: the image folder does not exist");
        }

        var dataset = new KohyaFolderDataset(subsets, captionExtension);
        if (dataset._images.Count == 0)
            throw new InvalidDataException($"{string.Join(", ", subsets.Select(s => s.Folder))}: no images ({string.Join(", ", ImageFiles.Extensions)})");
        return dataset;
    }

    private List<KohyaSubset> AddSubsets(IEnumerable<(string Folder, int Repeats, string ClassCaption)> folders)
    {
        var subsets = new List<KohyaSubset>();
        foreach (var (folder, repeats, classCaption) in folders)
        {
            var files = System.IO.Directory.EnumerateFiles(folder).Where(ImageFiles.HasImageExtension).OrderBy(f => f, StringComparer.Ordinal).ToList();
            foreach (var file in files)
                _images.Add((file, subsets.Count));
            subsets.Add(new KohyaSubset(folder, repeats, classCaption, files.Count));
        }

        return subsets;
    }

    private static string CommonParent(IReadOnlyList<string> folders)
    {
        string common = Path.GetDirectoryName(folders[0]) ?? folders[0];
        while (folders.Any(f => !f.StartsWith(common.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal)))
            common = Path.GetDirectoryName(common) ?? Path.GetPathRoot(common)!;
        return common;
    }

    /// <summary>The data folder (full path).</summary>
    public string Directory { get; }

    /// <summary>The sub-folders with repeats, in name order.</summary>
    public IReadOnlyList<KohyaSubset> Subsets { get; }

    /// <inheritdoc />
    public int Count => _images.Count;

    /// <summary>True when <paramref name="directory"/> is laid out as sd-scripts' DreamBooth folders: no images of its own and at least one <c>&lt;repeats&gt;_&lt;name&gt;</c> sub-folder.</summary>
    /// <param name="directory">The data folder.</param>
    public static bool IsKohyaLayout(string directory) =>
        System.IO.Directory.Exists(directory)
        && !System.IO.Directory.EnumerateFiles(directory).Any(ImageFiles.HasImageExtension)
        && System.IO.Directory.EnumerateDirectories(directory).Any(d => ParseName(Path.GetFileName(d)) is not null);

    /// <summary>sd-scripts' reading of a sub-folder name: the repeats before the first underscore, the class caption after it (null: not a repeats folder).</summary>
    /// <param name="name">The folder name, e.g. <c>10_my_char</c>.</param>
    public static (int Repeats, string ClassCaption)? ParseName(string name)
    {
        var tokens = name.Split('_');
        if (!int.TryParse(tokens[0], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int repeats) || repeats < 1)
            return null;
        return (repeats, string.Join("_", tokens.Skip(1)));
    }

    /// <inheritdoc />
    public string NameOf(int index) => _images[index].File;

    /// <summary>The sub-folder of image <paramref name="index"/>.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public KohyaSubset SubsetOf(int index) => Subsets[_images[index].Subset];

    /// <summary>Image <paramref name="index"/>'s caption: its caption file's first line, else its folder's class caption.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public string CaptionOf(int index) => ReadCaptionFile(_images[index].File, _captionExtension) ?? SubsetOf(index).ClassCaption;

    /// <summary>Checks image <paramref name="index"/> from its header, without decoding its pixels.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <exception cref="InvalidImageException">The file is empty, not an image, or too large.</exception>
    public void Probe(int index) => ImageFiles.Probe(_images[index].File);

    /// <inheritdoc />
    public TrainingImage Load(int index)
    {
        string file = _images[index].File;
        return new TrainingImage(ImageFiles.LoadRgb(file), CaptionOf(index), file);
    }

    internal static string NormaliseExtension(string extension) =>
        extension.Length > 0 && !extension.StartsWith('.') ? "." + extension : extension;

    /// <summary>sd-scripts' read_caption: the first line of <c>name + extension</c>, stripped (null when there is no such file).</summary>
    internal static string? ReadCaptionFile(string imageFile, string extension)
    {
        string path = Path.Combine(Path.GetDirectoryName(imageFile) ?? "", Path.GetFileNameWithoutExtension(imageFile) + extension);
        if (!File.Exists(path))
            return null;
        using var reader = new StreamReader(path, System.Text.Encoding.UTF8);
        return (reader.ReadLine() ?? "").Trim();
    }
}
