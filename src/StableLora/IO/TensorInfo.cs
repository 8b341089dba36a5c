using TorchSharp;

namespace StableLora.IO;

/// <summary>What a weight file declares about one tensor, before any of its bytes are read.</summary>
internal sealed record TensorInfo(string Name, torch.ScalarType DType, long[] Shape)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    public string ShapeText => FormatShape(Shape);

    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
}

/// <summary>A weight file (or a set of shards) whose tensors can be listed without reading them and read one at a time.</summary>
internal interface ITensorReader : IDisposable
{
    /// <summary>The file (or index file) the tensors come from, for messages.</summary>
    string Path { get; }

    /// <summary>Every tensor in the order the file stores them.</summary>
    IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>The tensor called <paramref name="name"/>, or <see langword="null"/>.</summary>
    TensorInfo? Find(string name);

    /// <summary>Reads one tensor into a new contiguous CPU tensor of the file's dtype.</summary>
    torch.Tensor Read(string name);

    /// <summary>The path of the file that holds <paramref name="name"/> (differs from <see cref="Path"/> for shards).</summary>
    string FileOf(string name) => Path;
}
