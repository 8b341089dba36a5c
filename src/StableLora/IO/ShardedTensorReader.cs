using System.Text.Json;
using TorchSharp;

namespace StableLora.IO;

/// <summary>
/// Weights split over several files with a <c>*.index.json</c> (<c>{"weight_map": {"key": "shard file"}}</c>), as
/// <c>save_pretrained</c> writes large models. Every shard is opened (headers only) when the index is.
/// </summary>
internal sealed class ShardedTensorReader : ITensorReader
{
    private readonly Dictionary<string, string> _shardOf;
    private readonly Dictionary<string, ITensorReader> _open;
    private readonly Dictionary<string, TensorInfo> _infos;

    private ShardedTensorReader(string indexPath, Dictionary<string, string> shardOf, List<TensorInfo> infos,
        Dictionary<string, ITensorReader> openShards)
    {
        Path = indexPath;
        _shardOf = shardOf;
        _infos = infos.ToDictionary(i => i.Name, StringComparer.Ordinal);
        _open = openShards;
        Tensors = infos;
    }

    public string Path { get; }

    public IReadOnlyList<TensorInfo> Tensors { get; }

    public static ShardedTensorReader Open(string indexPath)
    {
        var listedShard = ReadWeightMap(indexPath);
        string directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        var openShards = new Dictionary<string, ITensorReader>(StringComparer.Ordinal);
        var infos = new List<TensorInfo>();
        var shardOf = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            foreach (var shard in listedShard.Values.Distinct(StringComparer.Ordinal))
            {
                string shardPath = System.IO.Path.Combine(directory, shard);
                var shardReader = TensorFiles.Open(shardPath);
                openShards[shardPath] = shardReader;
                foreach (var info in shardReader.Tensors.Where(i => listedShard.GetValueOrDefault(i.Name) == shard))
                {
                    infos.Add(info);
                    shardOf[info.Name] = shardPath;
                }
            }

            var missing = listedShard.Keys.FirstOrDefault(k => !shardOf.ContainsKey(k));
            if (missing is not null)
                throw new InvalidModelFileException(indexPath, missing, $"the index places it in '{listedShard[missing]}', which does not hold it");
            return new ShardedTensorReader(indexPath, shardOf, infos, openShards);
        }
        catch
        {
            foreach (var reader in openShards.Values)
                reader.Dispose();
            throw;
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(indexPath, "weight_map", "the index has no weight_map object");
            var listedShard = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                string shard = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : "";
                if (shard.Length == 0 || shard.Contains('/') || shard.Contains('\\') || shard is "." or "..")
                    throw new InvalidModelFileException(indexPath, entry.Name, $"shard name '{shard}' is not a file name in the index's folder");
                listedShard[entry.Name] = shard;
            }

            return listedShard;
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(indexPath, null, $"the index is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            // JsonDocument checks UTF-8 lazily, when a name or string is read.
            throw new InvalidModelFileException(indexPath, null, $"the index is not valid UTF-8: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidModelFileException(indexPath, null, $"cannot read the index: {e.Message}", e);
        }
    }

    public TensorInfo? Find(string name) => _infos.GetValueOrDefault(name);

    public torch.Tensor Read(string name)
    {
        if (!_shardOf.TryGetValue(name, out var shardPath))
            throw new InvalidModelFileException(Path, name, "no such tensor in the index");
        return OpenShard(shardPath).Read(name);
    }

    public string FileOf(string name) => _shardOf.GetValueOrDefault(name) ?? Path;

    public void Dispose()
    {
        foreach (var reader in _open.Values)
            reader.Dispose();
        _open.Clear();
    }

    private ITensorReader OpenShard(string shardPath) => _open[shardPath];
}
