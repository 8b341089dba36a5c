using Microsoft.Extensions.Logging;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Lora;

/// <summary>
/// The per-call LoRAs of one generator, read once and kept: a file is read again only when its size or time stamp
/// changed. At most <see cref="Capacity"/> networks are kept; the least recently used one is released first. A kept
/// LoRA or LoCon costs its own weights; a LyCORIS module (LoHa, LoKr, DoRA) holds a dense change as large as its layer.
/// </summary>
internal sealed class LoraNetworkCache : IDisposable
{
    public const int Capacity = 8;

    private readonly AdaptableModels _models;
    private readonly TensorSpec _spec;
    private readonly UnmatchedLoraKeys _unmatched;
    private readonly ILogger _logger;
    private readonly LinkedList<Entry> _entries = new();

    public LoraNetworkCache(AdaptableModels models, TensorSpec spec, UnmatchedLoraKeys unmatched, ILogger logger)
    {
        _models = models;
        _spec = spec;
        _unmatched = unmatched;
        _logger = logger;
    }

    public int Count => _entries.Count;

    /// <summary>The network of <paramref name="path"/>, read now when it is not kept or the file changed.</summary>
    public (LoraNetwork Network, string Hash) Get(string path)
    {
        string full = Path.GetFullPath(path);
        var file = new FileInfo(full);
        var stamp = (file.Exists ? file.Length : -1, file.Exists ? file.LastWriteTimeUtc : DateTime.MinValue);
        for (var node = _entries.First; node is not null; node = node.Next)
        {
            if (!string.Equals(node.Value.Path, full, StringComparison.Ordinal))
                continue;
            _entries.Remove(node);
            if (node.Value.Stamp == stamp)
            {
                _entries.AddFirst(node);
                return (node.Value.Network, node.Value.Hash);
            }

            node.Value.Network.Dispose();
            break;
        }

        using var lora = LoraWeights.Load(full);
        var network = lora.CreateNetwork(_models, _unmatched, _logger, _spec);
        var entry = new Entry(full, stamp, network, LoraFileHash.Compute(full));
        _entries.AddFirst(entry);
        while (_entries.Count > Capacity)
        {
            _entries.Last!.Value.Network.Dispose();
            _entries.RemoveLast();
        }

        return (network, entry.Hash);
    }

    public void Dispose()
    {
        foreach (var entry in _entries)
            entry.Network.Dispose();
        _entries.Clear();
    }

    private sealed record Entry(string Path, (long Length, DateTime Written) Stamp, LoraNetwork Network, string Hash);
}

/// <summary>AUTOMATIC1111's AutoV3 LoRA hash: sha256 of the safetensors tensor data (or the whole file otherwise), first 12 hex digits.</summary>
internal static class LoraFileHash
{
    public static string Compute(string path)
    {
        using var stream = File.OpenRead(path);
        if (IO.TensorFiles.IsSafetensors(path) && stream.Length >= 8)
        {
            var length = new byte[8];
            stream.ReadExactly(length);
            stream.Position = 8 + (long)BitConverter.ToUInt64(length);
        }

        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(stream)).ToLowerInvariant()[..12];
    }
}
