using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;

namespace StableLora.IO;

/// <summary>
/// Reads a <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header that maps each tensor name to
/// its dtype, shape and byte range, then the raw tensor bytes. Every declaration is checked against the file before
/// any tensor is allocated, so a broken or hostile file fails with a message naming the file and key.
/// </summary>
internal sealed class SafetensorsReader : ITensorReader
{
    /// <summary>Headers larger than this are refused (the real SD1.5 UNet's header is about 100 kB).</summary>
    internal const long MaxHeaderBytes = 100L * 1024 * 1024;

    private const string MetadataKey = "__metadata__";

    private const int MaxRank = 16;

    private readonly FileStream _stream;
    private readonly Dictionary<string, Entry> _entries;
    private readonly long _dataStart;

    private SafetensorsReader(string path, FileStream stream, List<Entry> entries, long dataStart, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        _entries = entries.ToDictionary(e => e.Info.Name, StringComparer.Ordinal);
        Tensors = entries.OrderBy(e => e.Begin).Select(e => e.Info).ToArray();
        Metadata = metadata;
    }

    public string Path { get; }

    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>The <c>__metadata__</c> string map (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public static SafetensorsReader Open(string path)
    {
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidModelFileException(path, null, $"cannot open the file: {e.Message}", e);
        }

        try
        {
            var (entries, dataStart, metadata) = ParseHeader(path, stream);
            return new SafetensorsReader(path, stream, entries, dataStart, metadata);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Reads only the header of <paramref name="path"/> and returns its <c>__metadata__</c>.</summary>
    public static IReadOnlyDictionary<string, string> ReadMetadata(string path)
    {
        using var reader = Open(path);
        return reader.Metadata;
    }

    public TensorInfo? Find(string name) => _entries.TryGetValue(name, out var entry) ? entry.Info : null;

    public torch.Tensor Read(string name)
    {
        if (!_entries.TryGetValue(name, out var entry))
            throw new InvalidModelFileException(Path, name, "no such tensor in the file");

        var tensor = torch.empty(entry.Info.Shape, entry.Info.DType, torch.CPU);
        try
        {
            if (entry.End > entry.Begin)
            {
                _stream.Position = _dataStart + entry.Begin;
                tensor.ReadBytesFromStream(_stream, (int)Math.Min(entry.End - entry.Begin, 1 << 20));
            }

            return tensor;
        }
        catch (EndOfStreamException e)
        {
            tensor.Dispose();
            throw new InvalidModelFileException(Path, name, "the file ends inside this tensor's data (truncated download?)", e);
        }
    }

    public void Dispose() => _stream.Dispose();

    private static (List<Entry> Entries, long DataStart, IReadOnlyDictionary<string, string> Metadata) ParseHeader(string path, FileStream stream)
    {
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw new InvalidModelFileException(path, null, $"not a safetensors file: {fileLength} bytes is shorter than the 8-byte header length");

        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(fileLength - 8))
            throw new InvalidModelFileException(path, null, $"not a safetensors file: the header claims {headerLength} bytes but only {fileLength - 8} follow");
        if (headerLength > MaxHeaderBytes)
            throw new InvalidModelFileException(path, null, $"the header claims {headerLength} bytes, more than the {MaxHeaderBytes} this reader accepts");

        var headerBytes = new byte[(int)headerLength];
        stream.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, null, $"the safetensors header is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            try
            {
                return ParseEntries(path, document.RootElement, dataStart, dataLength);
            }
            catch (InvalidOperationException e)
            {
                // JsonDocument checks UTF-8 lazily: an invalid name or string fails only when it is read.
                throw new InvalidModelFileException(path, null, $"the safetensors header is not valid UTF-8: {e.Message}", e);
            }
        }
    }

    private static (List<Entry> Entries, long DataStart, IReadOnlyDictionary<string, string> Metadata) ParseEntries(
        string path, JsonElement root, long dataStart, long dataLength)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(path, null, "the safetensors header is not a JSON object");

        var entries = new List<Entry>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        IReadOnlyDictionary<string, string> metadata = new Dictionary<string, string>();
        foreach (var property in root.EnumerateObject())
        {
            if (!seen.Add(property.Name))
                throw new InvalidModelFileException(path, property.Name, "the key appears twice in the header");

            if (property.Name == MetadataKey)
            {
                metadata = ParseMetadata(path, property.Value);
                continue;
            }

            entries.Add(ParseEntry(path, property.Name, property.Value, dataLength));
        }

        CheckNoOverlaps(path, entries);
        return (entries, dataStart, metadata);
    }

    private static Dictionary<string, string> ParseMetadata(string path, JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(path, MetadataKey, "must be an object of strings");
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var item in element.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new InvalidModelFileException(path, $"{MetadataKey}.{item.Name}", "metadata values must be strings");
            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                throw new InvalidModelFileException(path, $"{MetadataKey}.{item.Name}", "the key appears twice in the metadata");
        }

        return metadata;
    }

    private static Entry ParseEntry(string path, string name, JsonElement element, long dataLength)
    {
        if (element.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(path, name, "the header entry is not an object with dtype, shape and data_offsets");

        if (!element.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new InvalidModelFileException(path, name, "the header entry has no dtype string");
        string dtypeCode = dtypeElement.GetString()!;
        if (!TensorDTypes.TryFromSafetensors(dtypeCode, out var dtype))
            throw new InvalidModelFileException(path, name, $"unsupported dtype '{dtypeCode}'");

        if (!element.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new InvalidModelFileException(path, name, "the header entry has no shape array");
        int rank = shapeElement.GetArrayLength();
        if (rank > MaxRank)
            throw new InvalidModelFileException(path, name, $"a shape of {rank} dimensions is not a weight tensor");
        var shape = new long[rank];
        int i = 0;
        foreach (var dimension in shapeElement.EnumerateArray())
        {
            if (dimension.ValueKind != JsonValueKind.Number || !dimension.TryGetInt64(out long size) || size < 0)
                throw new InvalidModelFileException(path, name, $"shape entry {dimension} is not a non-negative integer");
            shape[i++] = size;
        }

        if (!element.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
            throw new InvalidModelFileException(path, name, "the header entry has no [begin, end] data_offsets");
        long begin = ReadOffset(path, name, offsetsElement[0]);
        long end = ReadOffset(path, name, offsetsElement[1]);
        if (end < begin)
            throw new InvalidModelFileException(path, name, $"data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength)
            throw new InvalidModelFileException(path, name, $"data_offsets [{begin}, {end}] reach past the {dataLength} data bytes of the file (truncated download?)");

        long expectedBytes;
        try
        {
            expectedBytes = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * TensorDTypes.ElementSize(dtype));
        }
        catch (OverflowException)
        {
            throw new InvalidModelFileException(path, name, $"shape {TensorInfo.FormatShape(shape)} is too large");
        }

        if (expectedBytes != end - begin)
            throw new InvalidModelFileException(path, name,
                $"{dtypeCode} {TensorInfo.FormatShape(shape)} needs {expectedBytes} bytes but data_offsets give {end - begin}");

        return new Entry(new TensorInfo(name, dtype, shape), begin, end);
    }

    private static long ReadOffset(string path, string name, JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out long value) || value < 0)
            throw new InvalidModelFileException(path, name, $"data offset {element} is not a non-negative integer");
        return value;
    }

    private static void CheckNoOverlaps(string path, List<Entry> entries)
    {
        Entry? previous = null;
        foreach (var entry in entries.Where(e => e.End > e.Begin).OrderBy(e => e.Begin))
        {
            if (previous is not null && entry.Begin < previous.End)
                throw new InvalidModelFileException(path, entry.Info.Name,
                    $"data_offsets [{entry.Begin}, {entry.End}] overlap those of '{previous.Info.Name}' [{previous.Begin}, {previous.End}]");
            previous = entry;
        }
    }

    private sealed record Entry(TensorInfo Info, long Begin, long End);
}

/// <summary>One tensor to write: its name, dtype and shape for the header, and how to produce its data when its turn comes.</summary>
internal sealed record SafetensorsEntry(string Name, torch.ScalarType DType, long[] Shape, Func<torch.Tensor> Produce);

/// <summary>Writes <c>.safetensors</c> files (with optional <c>__metadata__</c>), atomically.</summary>
internal static class SafetensorsWriter
{
    public static void Write(string path, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(t => new SafetensorsEntry(t.Key, t.Value.dtype, t.Value.shape, () => t.Value)).ToList(), metadata);

    /// <summary>
    /// Writes tensors that are produced one at a time, as the data is written (converted to another dtype, moved off the
    /// GPU, reshaped), so a whole model is written without a second copy of it in memory. Each produced tensor must
    /// have the entry's dtype and shape; tensors made inside <see cref="SafetensorsEntry.Produce"/> are disposed after use.
    /// </summary>
    public static void Write(string path, IReadOnlyList<SafetensorsEntry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new Dictionary<string, object>(StringComparer.Ordinal);
        if (metadata is { Count: > 0 })
            header["__metadata__"] = metadata;

        long offset = 0;
        foreach (var entry in entries)
        {
            if (header.ContainsKey(entry.Name))
                throw new ArgumentException($"tensor name '{entry.Name}' appears twice", nameof(entries));
            long bytes = entry.Shape.Aggregate(1L, (a, b) => a * b) * TensorDTypes.ElementSize(entry.DType);
            header[entry.Name] = new SortedDictionary<string, object>(StringComparer.Ordinal)
            {
                ["dtype"] = TensorDTypes.ToSafetensors(entry.DType),
                ["shape"] = entry.Shape,
                ["data_offsets"] = new[] { offset, offset + bytes },
            };
            offset += bytes;
        }

        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        int padding = (8 - json.Length % 8) % 8;
        byte[] headerBytes = new byte[json.Length + padding];
        json.CopyTo(headerBytes, 0);
        headerBytes.AsSpan(json.Length).Fill((byte)' ');

        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)headerBytes.Length);
            stream.Write(length);
            stream.Write(headerBytes);
            foreach (var entry in entries)
            {
                using var scope = torch.NewDisposeScope();
                var cpu = entry.Produce().detach().cpu().contiguous();
                if (cpu.dtype != entry.DType || !cpu.shape.SequenceEqual(entry.Shape))
                    throw new InvalidOperationException($"'{entry.Name}' was declared {TensorDTypes.Describe(entry.DType)} {TensorInfo.FormatShape(entry.Shape)} but produced {TensorDTypes.Describe(cpu.dtype)} {TensorInfo.FormatShape(cpu.shape)}");
                if (cpu.NumberOfElements > 0)
                    cpu.WriteBytesToStream(stream, (int)Math.Min(cpu.NumberOfElements * cpu.ElementSize, 1 << 20));
            }
        });
    }

    /// <summary>The header bytes only (for tests of the format).</summary>
    internal static string ReadHeaderJson(string path)
    {
        using var stream = File.OpenRead(path);
        Span<byte> length = stackalloc byte[8];
        stream.ReadExactly(length);
        var bytes = new byte[(int)BinaryPrimitives.ReadUInt64LittleEndian(length)];
        stream.ReadExactly(bytes);
        return Encoding.UTF8.GetString(bytes);
    }
}
