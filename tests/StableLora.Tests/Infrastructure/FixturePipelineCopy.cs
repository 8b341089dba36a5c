using StableLora.IO;
using static TorchSharp.torch;

namespace StableLora.Tests.Infrastructure;

/// <summary>A temp copy of the tiny fixture pipeline whose component weights tests can rewrite (other formats, broken keys).</summary>
internal sealed class FixturePipelineCopy : IDisposable
{
    private readonly TempDirectory _temp = new();

    public FixturePipelineCopy()
    {
        Directory = Path.Combine(_temp.Path, "pipeline");
        CopyDirectory(FixturePaths.TinyPipeline, Directory);
    }

    public string Directory { get; }

    public string Component(string name) => Path.Combine(Directory, name);

    /// <summary>The fixture's tensors of one component, in file order.</summary>
    public static List<KeyValuePair<string, Tensor>> ReadFixtureWeights(string component, string fileName)
    {
        using var reader = SafetensorsReader.Open(Path.Combine(FixturePaths.TinyPipeline, component, fileName));
        return reader.Tensors.Select(t => new KeyValuePair<string, Tensor>(t.Name, reader.Read(t.Name))).ToList();
    }

    /// <summary>Deletes every weights file of a component (so only what a test writes is there).</summary>
    public void RemoveWeights(string component)
    {
        foreach (var file in System.IO.Directory.GetFiles(Component(component)).Where(f => !f.EndsWith("config.json", StringComparison.Ordinal)))
            File.Delete(file);
    }

    public void Dispose() => _temp.Dispose();

    private static void CopyDirectory(string source, string target)
    {
        System.IO.Directory.CreateDirectory(target);
        foreach (var file in System.IO.Directory.GetFiles(source))
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
        foreach (var directory in System.IO.Directory.GetDirectories(source))
            CopyDirectory(directory, Path.Combine(target, Path.GetFileName(directory)));
    }
}
