using System.IO.Compression;
using TorchSharp;

namespace StableLora.IO;

/// <summary>
/// Reads a PyTorch checkpoint written by <c>torch.save</c> (the zip format of PyTorch 1.6 and later: <c>.pt</c>,
/// <c>.bin</c>, <c>.ckpt</c>, <c>.pth</c>): <c>&lt;name&gt;/data.pkl</c> describes the object, <c>&lt;name&gt;/data/&lt;key&gt;</c>
/// hold the raw little-endian storages. The pickle is run by <see cref="RestrictedUnpickler"/>, so only plain data
/// is ever built. Tensors are read one at a time, when asked for.
/// </summary>
internal sealed class TorchPickleReader : ITensorReader
{
    /// <summary>The pickle part of a weights file is small (names and shapes); refuse absurd ones.</summary>
    internal const long MaxPickleBytes = 64L * 1024 * 1024;

    /// <summary>Weights have a handful of dimensions; more is not a weights file.</summary>
    private const int MaxRank = 16;

    private readonly ZipArchive _archive;
    private readonly string _prefix;
    private readonly Dictionary<string, PickleTensor> _tensors;

    private TorchPickleReader(string path, ZipArchive archive, string prefix, List<(string Name, PickleTensor Tensor)> tensors,
        IReadOnlyList<string> nonTensorKeys, string? wrapperKey)
    {
        Path = path;
        _archive = archive;
        _prefix = prefix;
        _tensors = new Dictionary<string, PickleTensor>(StringComparer.Ordinal);
        var infos = new List<TensorInfo>();
        foreach (var (name, tensor) in tensors)
        {
            if (!_tensors.TryAdd(name, tensor))
                throw new InvalidModelFileException(path, name, "the name appears twice in the state dict (keys of different types with the same text)");
            var dtype = CheckView(name, tensor);
            StorageEntry(name, tensor.Storage, TensorDTypes.ElementSize(dtype));
            infos.Add(new TensorInfo(name, dtype, tensor.Shape));
        }

        Tensors = infos;
        NonTensorKeys = nonTensorKeys;
        WrapperKey = wrapperKey;
    }

    public string Path { get; }

    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>Top-level keys of the state dict whose values are not tensors (numbers, strings, nested dicts).</summary>
    public IReadOnlyList<string> NonTensorKeys { get; }

    /// <summary>"state_dict" when the tensors were found inside such a wrapper (Lightning <c>.ckpt</c> files), else null.</summary>
    public string? WrapperKey { get; }

    public static TorchPickleReader Open(string path)
    {
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidModelFileException(path, null, $"cannot open the file: {e.Message}", e);
        }

        try
        {
            CheckSignature(path, stream);
            ZipArchive archive;
            try
            {
                archive = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: false);
            }
            catch (InvalidDataException e)
            {
                throw new InvalidModelFileException(path, null, $"the PyTorch zip archive is damaged or truncated: {e.Message}", e);
            }

            try
            {
                return OpenArchive(path, archive);
            }
            catch (InvalidDataException e)
            {
                archive.Dispose();
                throw new InvalidModelFileException(path, null, $"the PyTorch zip archive is damaged or truncated: {e.Message}", e);
            }
            catch
            {
                archive.Dispose();
                throw;
            }
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public TensorInfo? Find(string name) => Tensors.FirstOrDefault(t => t.Name == name);

    public torch.Tensor Read(string name)
    {
        if (!_tensors.TryGetValue(name, out var tensor))
            throw new InvalidModelFileException(Path, name, "no such tensor in the file");

        var dtype = CheckView(name, tensor);
        int elementSize = TensorDTypes.ElementSize(dtype);
        var entry = StorageEntry(name, tensor.Storage, elementSize);

        bool contiguous = IsContiguous(tensor.Shape, tensor.Stride);
        long firstElement = contiguous ? tensor.StorageOffset : 0;
        long elementCount = contiguous ? tensor.Shape.Aggregate(1L, (a, b) => a * b) : tensor.Storage.ElementCount;

        torch.Tensor flat;
        try
        {
            flat = torch.empty(new[] { elementCount }, dtype, torch.CPU);
        }
        catch (System.Runtime.InteropServices.ExternalException e)
        {
            // Only a compressed record can declare more bytes than the file has; libtorch refuses what memory cannot hold.
            throw new InvalidModelFileException(Path, name, $"cannot allocate {elementCount} elements for this tensor: {e.Message.Split('\n')[0]}", e);
        }

        try
        {
            using (var data = entry.Open())
            {
                Skip(data, firstElement * elementSize, name);
                if (elementCount > 0)
                    flat.ReadBytesFromStream(data, (int)Math.Min(elementCount * elementSize, 1 << 20));
            }

            if (contiguous)
                return flat.reshape(tensor.Shape);

            using (flat)
            using (var view = flat.as_strided(tensor.Shape, tensor.Stride, tensor.StorageOffset))
                return view.contiguous();
        }
        catch (EndOfStreamException e)
        {
            flat.Dispose();
            throw new InvalidModelFileException(Path, name, "the storage record ends before the tensor's data (truncated file?)", e);
        }
        catch (InvalidDataException e)
        {
            flat.Dispose();
            throw new InvalidModelFileException(Path, name, $"the storage record is damaged: {e.Message}", e);
        }
    }

    public void Dispose() => _archive.Dispose();

    private static void CheckSignature(string path, FileStream stream)
    {
        Span<byte> signature = stackalloc byte[4];
        int read = stream.ReadAtLeast(signature, 4, throwOnEndOfStream: false);
        stream.Position = 0;
        if (read == 4 && signature[0] == 0x50 && signature[1] == 0x4b && signature[2] == 0x03 && signature[3] == 0x04)
            return;
        if (read >= 2 && signature[0] == 0x80)
            throw new InvalidModelFileException(path, null,
                "this is the legacy torch.save format of PyTorch before 1.6, which StableLora does not read; re-save it with a newer PyTorch or convert it to .safetensors");
        throw new InvalidModelFileException(path, null, "not a PyTorch checkpoint (no zip signature)");
    }

    private static TorchPickleReader OpenArchive(string path, ZipArchive archive)
    {
        var pickles = archive.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) || e.FullName == "data.pkl").ToList();
        if (pickles.Count != 1)
            throw new InvalidModelFileException(path, "data.pkl",
                pickles.Count == 0 ? "the archive has no data.pkl record" : "the archive has more than one data.pkl record");
        var pickleEntry = pickles[0];
        string prefix = pickleEntry.FullName[..^"data.pkl".Length];
        if (pickleEntry.Length > MaxPickleBytes)
            throw new InvalidModelFileException(path, pickleEntry.FullName, $"the pickle is {pickleEntry.Length} bytes, more than a weights file needs");

        byte[] pickle = new byte[pickleEntry.Length];
        try
        {
            using var pickleStream = pickleEntry.Open();
            pickleStream.ReadExactly(pickle);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
        {
            throw new InvalidModelFileException(path, pickleEntry.FullName, $"cannot read the pickle record: {e.Message}", e);
        }

        object? root = RestrictedUnpickler.Load(path, pickle);
        if (root is not PickleDict dict)
            throw new InvalidModelFileException(path, null, "the checkpoint is not a dict of tensors (a state dict)");

        string? wrapperKey = null;
        if (!dict.Items.Any(i => i.Value is PickleTensor) && dict.TryGet("state_dict", out var inner) && inner is PickleDict innerDict)
        {
            dict = innerDict;
            wrapperKey = "state_dict";
        }

        var tensors = new List<(string, PickleTensor)>();
        var others = new List<string>();
        foreach (var (key, value) in dict.Items)
        {
            string name = key.ToString() ?? "";
            if (value is PickleTensor tensor)
                tensors.Add((name, tensor));
            else
                others.Add(name);
        }

        return new TorchPickleReader(path, archive, prefix, tensors, others, wrapperKey);
    }

    private ZipArchiveEntry StorageEntry(string name, PickleStorage storage, int elementSize)
    {
        string recordName = $"{_prefix}data/{storage.Key}";
        var entry = _archive.GetEntry(recordName)
                    ?? throw new InvalidModelFileException(Path, name, $"the archive has no record '{recordName}' for this tensor's storage");
        // Checked: 2^62 + 1 float32 elements would otherwise wrap around to the 4 bytes of a tiny record.
        long declaredBytes = storage.ElementCount <= long.MaxValue / elementSize ? storage.ElementCount * elementSize : -1;
        if (entry.Length != declaredBytes)
            throw new InvalidModelFileException(Path, name,
                $"record '{recordName}' holds {entry.Length} bytes but the storage declares {storage.ElementCount} elements of {elementSize} bytes");
        return entry;
    }

    /// <summary>
    /// Checks a tensor's view of its storage before anything is allocated: known dtype, sane rank, non-negative sizes,
    /// strides and offset, an element count that neither overflows nor exceeds the storage's (a broadcast view would
    /// make a tiny file expand into an arbitrarily large tensor), and every viewed element inside the storage.
    /// </summary>
    private torch.ScalarType CheckView(string name, PickleTensor tensor)
    {
        if (!TensorDTypes.TryFromTorchStorage(tensor.Storage.StorageType, out var dtype))
            throw new InvalidModelFileException(Path, name, $"unsupported storage type '{tensor.Storage.StorageType}'");
        if (tensor.Shape.Length > MaxRank)
            throw new InvalidModelFileException(Path, name, $"a shape of {tensor.Shape.Length} dimensions is not a weight tensor");
        if (tensor.Shape.Length != tensor.Stride.Length || tensor.Shape.Any(s => s < 0) || tensor.Stride.Any(s => s < 0) || tensor.StorageOffset < 0)
            throw new InvalidModelFileException(Path, name, "the tensor's shape, stride or storage offset is invalid");

        long elements, extent;
        try
        {
            elements = tensor.Shape.Aggregate(1L, (a, b) => checked(a * b));
            extent = StorageExtent(tensor);
        }
        catch (OverflowException)
        {
            throw new InvalidModelFileException(Path, name, $"shape {TensorInfo.FormatShape(tensor.Shape)} with strides {TensorInfo.FormatShape(tensor.Stride)} is too large");
        }

        if (extent > tensor.Storage.ElementCount)
            throw new InvalidModelFileException(Path, name,
                $"the tensor views elements up to {extent} of a storage that holds only {tensor.Storage.ElementCount}");
        if (elements > tensor.Storage.ElementCount)
            throw new InvalidModelFileException(Path, name,
                $"the tensor has more elements ({elements}) than its storage holds ({tensor.Storage.ElementCount}): overlapping (broadcast) views are not weights");
        return dtype;
    }

    private static long StorageExtent(PickleTensor tensor)
    {
        if (tensor.Shape.Any(s => s == 0))
            return tensor.StorageOffset;
        long last = tensor.StorageOffset;
        for (int i = 0; i < tensor.Shape.Length; i++)
            last = checked(last + checked((tensor.Shape[i] - 1) * tensor.Stride[i]));
        return checked(last + 1);
    }

    private static bool IsContiguous(long[] shape, long[] stride)
    {
        long expected = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            if (shape[i] != 1 && stride[i] != expected)
                return false;
            expected *= shape[i];
        }

        return true;
    }

    private void Skip(Stream stream, long bytes, string name)
    {
        var buffer = new byte[(int)Math.Min(Math.Max(bytes, 1), 1 << 20)];
        while (bytes > 0)
        {
            int read = stream.Read(buffer, 0, (int)Math.Min(bytes, buffer.Length));
            if (read == 0)
                throw new InvalidModelFileException(Path, name, "the storage record ends before the tensor's offset");
            bytes -= read;
        }
    }
}
