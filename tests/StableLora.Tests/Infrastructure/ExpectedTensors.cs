using StableLora.IO;
using TorchSharp;

namespace StableLora.Tests.Infrastructure;

/// <summary>Tensors from the fixture's <c>expected/*.safetensors</c> files, read on demand.</summary>
internal static class ExpectedTensors
{
    public static torch.Tensor Read(string file, string name)
    {
        using var reader = SafetensorsReader.Open(FixturePaths.Expected(file));
        return reader.Read(name);
    }

    public static IReadOnlyList<string> Names(string file)
    {
        using var reader = SafetensorsReader.Open(FixturePaths.Expected(file));
        return reader.Tensors.Select(t => t.Name).ToArray();
    }
}
