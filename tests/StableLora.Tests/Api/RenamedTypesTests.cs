using StableLora.Data;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Api;

/// <summary>Renamed public types keep working under their old names, marked obsolete.</summary>
public sealed class RenamedTypesTests
{
    [Fact]
    public void SketchDatasetIsAnObsoleteNameOfImageFolderDataset()
    {
        string photos = Path.Combine(FixturePaths.Root, "photos");
#pragma warning disable CS0618
        Assert.NotNull(typeof(SketchDataset).GetCustomAttributes(typeof(ObsoleteAttribute), false).SingleOrDefault());
        IImageDataset old = new SketchDataset(photos);
#pragma warning restore CS0618
        var current = new ImageFolderDataset(photos);
        Assert.Equal(current.Count, old.Count);
        Assert.Equal(Enumerable.Range(0, current.Count).Select(current.NameOf), Enumerable.Range(0, old.Count).Select(old.NameOf));
    }
}
