using System.Text;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using TorchSharp;

namespace StableLora.Tests.Hardening;

/// <summary>
/// Broken and hostile .safetensors files: every one is refused with an <see cref="InvalidModelFileException"/> that
/// names the file (and the key where there is one), before any tensor is allocated.
/// </summary>
public sealed class HostileSafetensorsTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(7)]
    public void FilesShorterThanTheLengthFieldAreRefused(int length)
    {
        string path = _temp.File("short.safetensors");
        File.WriteAllBytes(path, new byte[length]);
        var error = Refused(path);
        Assert.Contains("shorter than the 8-byte header length", error.Message);
    }

    [Theory]
    [InlineData(1_000_000UL)]
    [InlineData(long.MaxValue)]
    [InlineData(ulong.MaxValue)]
    [InlineData(0x8000_0000UL)]
    public void HeaderLengthBeyondTheFileIsRefusedWithoutAllocating(ulong claimed)
    {
        string path = _temp.File("huge-header.safetensors");
        var bytes = new byte[64];
        BitConverter.GetBytes(claimed).CopyTo(bytes, 0);
        File.WriteAllBytes(path, bytes);

        long before = GC.GetAllocatedBytesForCurrentThread();
        var error = Refused(path);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
        Assert.Contains($"header claims {claimed} bytes", error.Message);
    }

    [Fact]
    public void HeaderLargerThanTheLimitIsRefusedEvenWhenTheFileIsThatLarge()
    {
        string path = _temp.File("sparse.safetensors");
        using (var stream = File.Create(path))
        {
            stream.Write(BitConverter.GetBytes((ulong)SafetensorsReader.MaxHeaderBytes + 1));
            stream.SetLength(SafetensorsReader.MaxHeaderBytes + 64); // sparse: no disk used
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        var error = Refused(path);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
        Assert.Contains("more than the", error.Message);
    }

    [Theory]
    [InlineData("not json at all")]
    [InlineData("{\"w\":")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",}}")]
    [InlineData("\u00ff\u00fe garbage")]
    public void InvalidJsonIsRefused(string header)
    {
        string path = WriteRaw(header, Array.Empty<byte>());
        Assert.Contains("not valid JSON", Refused(path).Message);
    }

    [Fact]
    public void InvalidUtf8InTheHeaderIsRefused()
    {
        string path = _temp.File("latin1.safetensors");
        var header = new byte[] { (byte)'{', (byte)'"', 0xff, 0xfe, (byte)'"', (byte)':', (byte)'1', (byte)'}' };
        WriteRawBytes(path, header, Array.Empty<byte>());
        Assert.Contains("not valid UTF-8", Refused(path).Message);
    }

    [Fact]
    public void DeeplyNestedJsonIsRefusedWithoutRecursingDeeply()
    {
        string header = "{\"__metadata__\":" + new string('[', 100_000) + new string(']', 100_000) + "}";
        string path = WriteRaw(header, Array.Empty<byte>());
        Assert.Contains("not valid JSON", Refused(path).Message);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("\"text\"")]
    [InlineData("42")]
    [InlineData("null")]
    public void HeaderThatIsNotAnObjectIsRefused(string header)
    {
        Assert.Contains("not a JSON object", Refused(WriteRaw(header, Array.Empty<byte>())).Message);
    }

    public static TheoryData<string, string, string> BrokenEntries => new()
    {
        { "\"w\":42", "w", "not an object" },
        { "\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}", "w", "no dtype" },
        { "\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}", "w", "no dtype" },
        { "\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}", "w", "unsupported dtype 'F8_E4M3'" },
        { "\"w\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}", "w", "unsupported dtype 'C64'" },
        { "\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}", "w", "unsupported dtype 'f32'" },
        { "\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}", "w", "no shape" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}", "w", "no shape" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", "w", "not a non-negative integer" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}", "w", "not a non-negative integer" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}", "w", "not a non-negative integer" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}", "w", "not a non-negative integer" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}", "w", "17 dimensions" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}", "w", "too large" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}", "w", "too large" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1]}", "w", "no [begin, end] data_offsets" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}", "w", "no [begin, end] data_offsets" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}", "w", "not a non-negative integer" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}", "w", "not a non-negative integer" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}", "w", "not a non-negative integer" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}", "w", "end before they begin" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}", "w", "reach past the 8 data bytes" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775800,9223372036854775804]}", "w", "reach past" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}", "w", "needs 8 bytes but data_offsets give 4" },
        { "\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}", "w", "needs 4 bytes but data_offsets give 8" },
        { "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}", "b", "overlap those of 'a'" },
        { "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", "b", "overlap those of 'a'" },
        { "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}", "w", "appears twice" },
        { "\"__metadata__\":[1]", "__metadata__", "object of strings" },
        { "\"__metadata__\":{\"k\":1}", "__metadata__.k", "must be strings" },
        { "\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}", "__metadata__.k", "appears twice" },
        { "\"__metadata__\":{},\"__metadata__\":{}", "__metadata__", "appears twice" },
    };

    [Theory]
    [MemberData(nameof(BrokenEntries))]
    public void BrokenHeaderEntriesAreRefusedNamingTheKey(string entries, string key, string message)
    {
        string path = WriteRaw("{" + entries + "}", new byte[8]);
        var error = Refused(path);
        Assert.Equal(key, error.Key);
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void AHugeShapeArrayIsRefusedWithoutAllocatingItsElements()
    {
        // 8 MB of "0," is four million dimensions; refusing them must not build a four-million-element array first.
        var header = new StringBuilder("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,0],\"shape\":[");
        header.Insert(header.Length, "0,", 4_000_000).Append("0]}}");
        string path = WriteRaw(header.ToString(), Array.Empty<byte>());
        long fileLength = new FileInfo(path).Length;

        long before = GC.GetAllocatedBytesForCurrentThread();
        var error = Refused(path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("dimensions", error.Message);
        Assert.True(allocated < 20 * fileLength, $"{allocated} bytes allocated for a {fileLength}-byte file");
    }

    [Fact]
    public void ManyTinyEntriesAllocateInProportionToTheHeader()
    {
        var header = new StringBuilder("{");
        for (int i = 0; i < 100_000; i++)
            header.Append($"\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}},");
        header.Append("\"x\":1}");
        string path = WriteRaw(header.ToString(), Array.Empty<byte>());
        long fileLength = new FileInfo(path).Length;

        long before = GC.GetAllocatedBytesForCurrentThread();
        Refused(path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 20 * fileLength, $"{allocated} bytes allocated for a {fileLength}-byte file");
    }

    [Fact]
    public void EmptyTensorsWithHugeDimensionsReadAsEmpty()
    {
        string path = WriteRaw("{\"w\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387903],\"data_offsets\":[0,0]}}", Array.Empty<byte>());
        using var reader = SafetensorsReader.Open(path);
        using var tensor = reader.Read("w");
        Assert.Equal(0, tensor.NumberOfElements);
    }

    [Fact]
    public void EveryTruncationOfAValidFileIsAClearError()
    {
        string full = _temp.File("full.safetensors");
        SafetensorsWriter.Write(full, new Dictionary<string, torch.Tensor>
        {
            ["a"] = torch.arange(6, dtype: torch.float32).reshape(2, 3),
            ["b"] = torch.ones(3, dtype: torch.float16),
        }, new Dictionary<string, string> { ["format"] = "pt" });
        var bytes = File.ReadAllBytes(full);

        string cut = _temp.File("cut.safetensors");
        for (int length = 0; length < bytes.Length; length++)
        {
            File.WriteAllBytes(cut, bytes[..length]);
            var error = Refused(cut);
            Assert.Equal(cut, error.FilePath);
        }

        output.WriteLine($"{bytes.Length} truncations refused");
    }

    [Fact]
    public void AFileShrunkAfterOpeningIsAClearErrorWhenRead()
    {
        string path = _temp.File("shrinks.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, torch.Tensor> { ["w"] = torch.ones(1024) });
        using var reader = SafetensorsReader.Open(path);
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
            stream.SetLength(stream.Length - 100);
        var error = Assert.Throws<InvalidModelFileException>(() => reader.Read("w"));
        Assert.Equal("w", error.Key);
        Assert.Contains("truncated", error.Message);
    }

    [Fact]
    public void ADirectoryOrMissingFileIsAClearError()
    {
        Assert.Contains("cannot open", Refused(_temp.Path).Message);
        Assert.Contains("cannot open", Refused(_temp.File("missing.safetensors")).Message);
    }

    [Theory]
    [InlineData("{\"weight_map\":{\"w\":\"../../etc/passwd\"}}", "w", "not a file name")]
    [InlineData("{\"weight_map\":{\"w\":\"/etc/passwd\"}}", "w", "not a file name")]
    [InlineData("{\"weight_map\":{\"w\":\"..\"}}", "w", "not a file name")]
    [InlineData("{\"weight_map\":{\"w\":7}}", "w", "not a file name")]
    [InlineData("{\"weight_map\":{\"w\":\"missing.safetensors\"}}", null, "does not exist")]
    [InlineData("{\"weight_map\":[]}", "weight_map", "no weight_map object")]
    [InlineData("[1,2]", "weight_map", "no weight_map object")]
    [InlineData("{\"weight_map\":", null, "not valid JSON")]
    public void BrokenShardIndexesAreRefused(string index, string? key, string message)
    {
        string path = _temp.File("model.safetensors.index.json");
        File.WriteAllText(path, index);
        var error = Assert.Throws<InvalidModelFileException>(() => ShardedTensorReader.Open(path).Dispose());
        Assert.Equal(key, error.Key);
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void ShardIndexWithInvalidUtf8OrMissingIsRefused()
    {
        string path = _temp.File("bad.index.json");
        File.WriteAllBytes(path, "{\"weight_map\":{\""u8.ToArray().Append((byte)0xff).Concat("\":\"a.safetensors\"}}"u8.ToArray()).ToArray());
        Assert.Contains("not valid UTF-8", Assert.Throws<InvalidModelFileException>(() => ShardedTensorReader.Open(path).Dispose()).Message);
        string missing = _temp.File("missing.index.json");
        Assert.Equal(missing, Assert.Throws<InvalidModelFileException>(() => ShardedTensorReader.Open(missing).Dispose()).FilePath);
    }

    private static InvalidModelFileException Refused(string path)
    {
        var error = Assert.Throws<InvalidModelFileException>(() =>
        {
            using var reader = SafetensorsReader.Open(path);
            foreach (var info in reader.Tensors)
                reader.Read(info.Name).Dispose();
        });
        Assert.Equal(path, error.FilePath);
        Assert.StartsWith(path, error.Message);
        return error;
    }

    private string WriteRaw(string header, byte[] data)
    {
        string path = _temp.File($"{Guid.NewGuid():N}.safetensors");
        WriteRawBytes(path, Encoding.UTF8.GetBytes(header), data);
        return path;
    }

    private static void WriteRawBytes(string path, byte[] header, byte[] data)
    {
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((ulong)header.Length));
        stream.Write(header);
        stream.Write(data);
    }
}
