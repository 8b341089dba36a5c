namespace StableLora.IO;

/// <summary>
/// Some tensors of another reader under names of the caller's choosing (one component of a single-file checkpoint,
/// or its EMA copy under the regular names). Reads go to the underlying reader one tensor at a time; the view does
/// not own that reader.
/// </summary>
internal sealed class TensorReaderView : ITensorReader
{
    private readonly ITensorReader _inner;
    private readonly Dictionary<string, string> _sourceOf;
    private readonly Dictionary<string, TensorInfo> _infos;

    /// <param name="inner">The reader that holds the tensors.</param>
    /// <param name="entries">Each tensor's name in the view and its key in <paramref name="inner"/>, in the view's order.</param>
    public TensorReaderView(ITensorReader inner, IEnumerable<(string Name, string SourceKey)> entries)
    {
        _inner = inner;
        var sources = inner.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _sourceOf = new Dictionary<string, string>(StringComparer.Ordinal);
        _infos = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var list = new List<TensorInfo>();
        foreach (var (name, sourceKey) in entries)
        {
            if (!sources.TryGetValue(sourceKey, out var source))
                throw new InvalidModelFileException(inner.Path, sourceKey, "no such tensor in the file");
            var info = source with { Name = name };
            if (!_infos.TryAdd(name, info))
                throw new ArgumentException($"the view names '{name}' twice", nameof(entries));
            _sourceOf[name] = sourceKey;
            list.Add(info);
        }

        Tensors = list;
    }

    public string Path => _inner.Path;

    public IReadOnlyList<TensorInfo> Tensors { get; }

    public TensorInfo? Find(string name) => _infos.GetValueOrDefault(name);

    public TorchSharp.torch.Tensor Read(string name) =>
        _sourceOf.TryGetValue(name, out var source) ? _inner.Read(source) : throw new InvalidModelFileException(Path, name, "no such tensor in the view");

    public string FileOf(string name) => _sourceOf.TryGetValue(name, out var source) ? _inner.FileOf(source) : Path;

    public void Dispose()
    {
        // The underlying reader belongs to the caller.
    }
}
