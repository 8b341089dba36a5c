using System.Collections.Specialized;
using TorchSharp;
using TorchSharp.PyBridge;

namespace StableLora.IO;

/// <summary>
/// Writes a state dict as <c>torch.save</c> does (zip archive with <c>data.pkl</c>, one raw storage per tensor and a
/// version record), through TorchSharp.PyBridge, so that Python's <c>torch.load</c> returns a dict in the same key
/// order. The file is written atomically, and the same tensors always give the same bytes (no timestamps).
/// </summary>
internal static class TorchPickleWriter
{
    public static void Write(string path, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors)
    {
        using var scope = torch.NewDisposeScope();
        var ordered = new OrderedDictionary(StringComparer.Ordinal);
        foreach (var (name, tensor) in tensors)
        {
            if (ordered.Contains(name))
                throw new ArgumentException($"tensor name '{name}' appears twice", nameof(tensors));
            // A fresh, contiguous CPU storage per tensor: PyBridge writes the tensor's own elements as the storage.
            ordered.Add(name, tensor.detach().cpu().contiguous().clone());
        }

        using var archive = new MemoryStream();
        PyTorchPickler.PickleStateDict(archive, ordered, leaveOpen: true);
        byte[] buffer = archive.GetBuffer();
        int length = checked((int)archive.Length);
        ZipTimestamps.Normalize(buffer.AsSpan(0, length));
        AtomicFile.Write(path, stream => stream.Write(buffer, 0, length));
    }
}
