using System.Text;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Hardening;

/// <summary>
/// Hostile and broken PyTorch checkpoints. Code-execution attempts are refused the moment the pickle names a global
/// outside the allow-list; structural damage (truncation, missing records, views beyond their storage, absurd
/// shapes) is an <see cref="InvalidModelFileException"/> naming the file and, where known, the tensor.
/// </summary>
public sealed class HostilePickleTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    public static TheoryData<string, string> DangerousGlobals => new()
    {
        { "os", "system" },
        { "posix", "system" },
        { "nt", "system" },
        { "builtins", "eval" },
        { "builtins", "exec" },
        { "builtins", "getattr" },
        { "builtins", "__import__" },
        { "builtins", "open" },
        { "__builtin__", "eval" },
        { "subprocess", "Popen" },
        { "subprocess", "check_output" },
        { "runpy", "_run_code" },
        { "pickle", "loads" },
        { "torch", "load" },
        { "torch.serialization", "load" },
        { "numpy.core.multiarray", "_reconstruct" },
        { "collections", "defaultdict" },
        { "torch._utils", "_rebuild_device_tensor_from_numpy" },
        { "torch.nn.modules.linear", "Linear" },
        { "__main__", "Payload" },
    };

    [Theory]
    [MemberData(nameof(DangerousGlobals))]
    public void GlobalsOutsideTheAllowListAreRefusedBeforeAnythingRuns(string module, string name)
    {
        string marker = _temp.File("pwned");
        foreach (bool stackGlobal in new[] { false, true })
        {
            var pickle = new PickleBuilder();
            if (stackGlobal)
                pickle.StackGlobal(module, name);
            else
                pickle.Global(module, name);
            // The call that would run it, then bytes that are not even a valid pickle: refusal comes first.
            byte[] bytes = pickle.Str($"touch {marker}").Op(0x85).Op('R').Raw(0xff, 0xff, 0xff).ToArray();
            string path = _temp.File($"evil-{stackGlobal}.pt");
            PickleBuilder.WriteArchive(path, bytes);

            var error = Refused(path);
            Assert.Contains($"'{module}.{name}'", error.Message);
            Assert.Contains("refused before anything ran", error.Message);
            Assert.False(File.Exists(marker));
        }
    }

    public static TheoryData<string, byte[], string> BrokenPickles => new()
    {
        { "REDUCE on a string", new PickleBuilder().Str("os.system").Op(')').Op('R').Stop().ToArray(), "not an allowed global" },
        { "REDUCE on an int", new PickleBuilder().Int(3).Op(')').Op('R').Stop().ToArray(), "not an allowed global" },
        { "NEWOBJ on a tuple", new PickleBuilder().Op(')').Op(')').Op(0x81).Stop().ToArray(), "not an allowed global" },
        { "calling a storage class", new PickleBuilder().Global("torch", "FloatStorage").Op(')').Op('R').Stop().ToArray(), "cannot be called" },
        { "BUILD on a list", new PickleBuilder().Op(']').Op('}').Op('b').Stop().ToArray(), "sets state" },
        { "INST", new PickleBuilder().Mark().Raw(Encoding.ASCII.GetBytes("ios\nsystem\n")).Stop().ToArray(), "opcode 0x69" },
        { "OBJ", new PickleBuilder().Mark().Global("collections", "OrderedDict").Op('o').Stop().ToArray(), "opcode 0x6f" },
        { "EXT1", new PickleBuilder().Op(0x82).Raw(1).Stop().ToArray(), "opcode 0x82" },
        { "EXT2", new PickleBuilder().Op(0x83).Raw(1, 0).Stop().ToArray(), "opcode 0x83" },
        { "EXT4", new PickleBuilder().Op(0x84).Raw(1, 0, 0, 0).Stop().ToArray(), "opcode 0x84" },
        { "PERSID", new PickleBuilder().Op('P').Raw(Encoding.ASCII.GetBytes("evil\n")).Stop().ToArray(), "opcode 0x50" },
        { "BINPERSID not a storage", new PickleBuilder().Str("os.system").Op(0x85).Op('Q').Stop().ToArray(), "unsupported persistent id" },
        { "BINPERSID with a string", new PickleBuilder().Str("x").Op('Q').Stop().ToArray(), "expected a tuple" },
        { "huge BINUNICODE length", new PickleBuilder().Op('X').Raw(0xff, 0xff, 0xff, 0xff).Stop().ToArray(), "reaches past the end" },
        { "huge BINBYTES8 length", new PickleBuilder().Op(0x8e).Raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f).Stop().ToArray(), "reaches past the end" },
        { "huge BINUNICODE8 length", new PickleBuilder().Op(0x8d).Raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff).Stop().ToArray(), "reaches past the end" },
        { "huge LONG4", new PickleBuilder().Op(0x8b).Raw(0x00, 0x00, 0x00, 0x40).Stop().ToArray(), "reaches past the end" },
        { "LONG4 beyond 64 bits", new PickleBuilder().Op(0x8b).Raw(9, 0, 0, 0).Raw(new byte[9]).Stop().ToArray(), "integer too large" },
        { "SHORT_BINSTRING past the end", new PickleBuilder().Op('U').Raw(200, 1, 2).ToArray(), "ends early" },
        { "no STOP", new PickleBuilder().Op('}').ToArray(), "ends early" },
        { "empty", Array.Empty<byte>(), "ends early" },
        { "POP on empty stack", new PickleBuilder().Op('0').Stop().ToArray(), "stack underflow" },
        { "STOP on empty stack", new PickleBuilder().Stop().ToArray(), "stack underflow" },
        { "APPEND to a dict", new PickleBuilder().Op('}').Int(1).Op('a').Stop().ToArray(), "expected a list" },
        { "SETITEM on a list", new PickleBuilder().Op(']').Int(1).Int(2).Op('s').Stop().ToArray(), "expected a dict" },
        { "POP_MARK without mark", new PickleBuilder().Op('1').Stop().ToArray(), "mark stack underflow" },
        { "POP across a mark", new PickleBuilder().Int(1).Mark().Op('0').Stop().ToArray(), "stack underflow" },
        { "missing memo", new PickleBuilder().Op('h').Raw(7).Stop().ToArray(), "memo entry 7 is missing" },
        { "missing LONG_BINGET memo", new PickleBuilder().Op('j').Raw(0xff, 0xff, 0xff, 0xff).Stop().ToArray(), "memo entry 4294967295 is missing" },
        { "text INT garbage", new PickleBuilder().Op('I').Raw(Encoding.ASCII.GetBytes("12ab\n")).Stop().ToArray(), "not an integer" },
        { "list as dict key", new PickleBuilder().Op('}').Op(']').Int(1).Op('s').Stop().ToArray(), "dict key" },
        { "unknown opcode", new PickleBuilder().Op(0xfe).Stop().ToArray(), "opcode 0xfe" },
    };

    [Theory]
    [MemberData(nameof(BrokenPickles))]
    public void BrokenOrHostilePicklesAreClearErrors(string description, byte[] pickle, string message)
    {
        var error = Assert.Throws<InvalidModelFileException>(() => RestrictedUnpickler.Load("x.pt", pickle));
        Assert.Contains(message, error.Message);
        Assert.StartsWith("x.pt: ", error.Message);
        Assert.NotNull(description);
    }

    [Fact]
    public void MillionsOfMarksAreRefused()
    {
        var pickle = new PickleBuilder();
        for (int i = 0; i < 1_000_000; i++)
            pickle.Mark();
        var error = Assert.Throws<InvalidModelFileException>(() => RestrictedUnpickler.Load("x.pt", pickle.Stop().ToArray()));
        Assert.Contains("too many nested marks", error.Message);
    }

    [Fact]
    public void DeeplyNestedContainersNeitherRecurseNorHang()
    {
        // A list nested 200,000 deep, then a dict nested as deep inside the state dict: no recursion anywhere.
        var pickle = new PickleBuilder().BeginStateDict().Str("deep");
        for (int i = 0; i < 200_000; i++)
            pickle.Op(']');
        for (int i = 0; i < 200_000 - 1; i++)
            pickle.Op('a');
        pickle.Str("w").Tensor("FloatStorage", "0", 2, 0, new long[] { 2 }, new long[] { 1 }).EndStateDict();
        string path = _temp.File("deep.pt");
        PickleBuilder.WriteArchive(path, pickle.ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[8] });

        using var reader = TorchPickleReader.Open(path);
        Assert.Equal(new[] { "deep" }, reader.NonTensorKeys);
        Assert.Equal("w", Assert.Single(reader.Tensors).Name);
    }

    [Fact]
    public void SelfReferencingMemoIsHarmless()
    {
        // l = []; l.append(l); {"loop": l} — a cycle through the memo.
        var pickle = new PickleBuilder().BeginStateDict().Str("loop").Op(']').Op('q').Raw(0).Op('h').Raw(0).Op('a').EndStateDict();
        string path = _temp.File("cycle.pt");
        PickleBuilder.WriteArchive(path, pickle.ToArray());
        using var reader = TorchPickleReader.Open(path);
        Assert.Equal(new[] { "loop" }, reader.NonTensorKeys);
    }

    [Fact]
    public void ManySmallObjectsAllocateInProportionToThePickle()
    {
        var pickle = new PickleBuilder();
        for (int i = 0; i < 1_000_000; i++)
            pickle.Op(']');
        byte[] bytes = pickle.Stop().ToArray();
        long before = GC.GetAllocatedBytesForCurrentThread();
        var result = RestrictedUnpickler.Load("x.pt", bytes);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.IsType<List<object?>>(result);
        Assert.True(allocated < 100L * bytes.Length, $"{allocated} bytes for a {bytes.Length}-byte pickle");
    }

    [Fact]
    public void OversizedPickleRecordIsRefusedBeforeReadingIt()
    {
        // A deflated data.pkl of 65 MB of zeros: a small file whose pickle would be read into memory whole.
        string path = _temp.File("huge-pickle.pt");
        using (var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create))
        using (var stream = zip.CreateEntry("archive/data.pkl", System.IO.Compression.CompressionLevel.Fastest).Open())
        {
            var zeros = new byte[1 << 20];
            for (int i = 0; i < 65; i++)
                stream.Write(zeros);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        var error = Refused(path);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 8 << 20);
        Assert.Equal("archive/data.pkl", error.Key);
        Assert.Contains($"{65 << 20} bytes, more than a weights file needs", error.Message);
    }

    public static TheoryData<string, long, long, long[], long[], string> BadViews => new()
    {
        { "offset beyond the storage", 4, 100, new long[] { 2 }, new long[] { 1 }, "views elements up to 102 of a storage that holds only 4" },
        { "stride beyond the storage", 4, 0, new long[] { 2, 2 }, new long[] { 4, 1 }, "of a storage that holds only 4" },
        { "negative stride", 4, 0, new long[] { 2 }, new long[] { -1 }, "invalid" },
        { "negative offset", 4, -1, new long[] { 2 }, new long[] { 1 }, "invalid" },
        { "negative size", 4, 0, new long[] { -2 }, new long[] { 1 }, "invalid" },
        { "shape and stride of different ranks", 4, 0, new long[] { 2, 2 }, new long[] { 1 }, "invalid" },
        { "extent overflow", 4, 0, new long[] { 1L << 62, 1L << 62 }, new long[] { 1, 1 }, "too large" },
        { "numel overflow by broadcasting", 4, 0, new long[] { 1L << 40, 1L << 40 }, new long[] { 0, 0 }, "too large" },
        { "broadcast view larger than the storage", 4, 0, new long[] { 1 << 20, 1 << 20 }, new long[] { 0, 0 }, "more elements" },
        { "rank 64", 4, 0, Enumerable.Repeat(1L, 64).ToArray(), Enumerable.Repeat(1L, 64).ToArray(), "dimensions" },
    };

    [Theory]
    [MemberData(nameof(BadViews))]
    public void TensorViewsOutsideTheirStorageAreRefusedNamingTheTensor(string description, long storageElements, long offset, long[] shape, long[] stride, string message)
    {
        string path = _temp.File("view.pt");
        PickleBuilder.WriteArchive(path, PickleBuilder.OneTensor("w", storageElements, offset, shape, stride),
            new Dictionary<string, byte[]> { ["0"] = new byte[storageElements * 4] });
        var error = Refused(path);
        Assert.Equal("w", error.Key);
        Assert.Contains(message, error.Message);
        Assert.NotNull(description);
    }

    [Fact]
    public void StorageElementCountThatOverflowsIsRefused()
    {
        // 2^62 + 1 float32 elements is 2^64 + 4 bytes, which wraps to 4: the 4-byte record must not pass for it.
        string path = _temp.File("wrap.pt");
        PickleBuilder.WriteArchive(path, PickleBuilder.OneTensor("w", (1L << 62) + 1, 0, new long[] { 1L << 40 }, new long[] { 1 }),
            new Dictionary<string, byte[]> { ["0"] = new byte[4] });
        var error = Refused(path);
        Assert.Equal("w", error.Key);
    }

    [Fact]
    public void MissingStorageRecordIsRefusedNamingTheTensorAndRecord()
    {
        string path = _temp.File("missing.pt");
        PickleBuilder.WriteArchive(path, PickleBuilder.OneTensor("w", 4, 0, new long[] { 4 }, new long[] { 1 }));
        var error = Refused(path);
        Assert.Equal("w", error.Key);
        Assert.Contains("no record 'archive/data/0'", error.Message);
    }

    [Fact]
    public void StorageRecordOfTheWrongSizeIsRefused()
    {
        string path = _temp.File("short-record.pt");
        PickleBuilder.WriteArchive(path, PickleBuilder.OneTensor("w", 4, 0, new long[] { 4 }, new long[] { 1 }),
            new Dictionary<string, byte[]> { ["0"] = new byte[12] });
        var error = Refused(path);
        Assert.Equal("w", error.Key);
        Assert.Contains("holds 12 bytes but the storage declares 4 elements of 4 bytes", error.Message);
    }

    [Fact]
    public void StridedViewWithinItsStorageReadsCorrectly()
    {
        string path = _temp.File("strided.pt");
        var storage = new float[] { 0, 1, 2, 3, 4, 5, 6, 7 };
        var bytes = new byte[32];
        Buffer.BlockCopy(storage, 0, bytes, 0, 32);
        // A transposed 2x3 view at offset 1: [[1, 4, 7]? no: stride (1, 3) over shape (3, 2)]
        PickleBuilder.WriteArchive(path, PickleBuilder.OneTensor("w", 8, 1, new long[] { 3, 2 }, new long[] { 1, 3 }),
            new Dictionary<string, byte[]> { ["0"] = bytes });
        using var reader = TorchPickleReader.Open(path);
        using var tensor = reader.Read("w");
        Assert.Equal(new float[] { 1, 4, 2, 5, 3, 6 }, tensor.data<float>().ToArray());
    }

    [Fact]
    public void TensorNamesThatCollideAfterConversionAreRefused()
    {
        // {1: tensor, "1": tensor}: distinct Python keys, one name.
        var pickle = new PickleBuilder().BeginStateDict()
            .Int(1).Tensor("FloatStorage", "0", 1, 0, new long[] { 1 }, new long[] { 1 })
            .Str("1").Tensor("FloatStorage", "0", 1, 0, new long[] { 1 }, new long[] { 1 })
            .EndStateDict();
        string path = _temp.File("collide.pt");
        PickleBuilder.WriteArchive(path, pickle.ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[4] });
        var error = Refused(path);
        Assert.Equal("1", error.Key);
        Assert.Contains("twice", error.Message);
    }

    [Fact]
    public void ArchiveWithoutDataPklIsRefused()
    {
        string path = _temp.File("nopkl.pt");
        using (var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create))
            zip.CreateEntry("archive/version");
        var error = Refused(path);
        Assert.Equal("data.pkl", error.Key);
        Assert.Contains("no data.pkl", error.Message);
    }

    [Fact]
    public void ArchiveWithTwoDataPklIsRefused()
    {
        string path = _temp.File("twopkl.pt");
        using (var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create))
        {
            zip.CreateEntry("a/data.pkl");
            zip.CreateEntry("b/data.pkl");
        }

        Assert.Contains("more than one data.pkl", Refused(path).Message);
    }

    [Fact]
    public void LegacyTorchSaveFormatHasItsOwnMessage()
    {
        // torch.save(..., _use_new_zipfile_serialization=False) starts with the pickled magic number 0x1950a86a20f9469cfc6c.
        string path = _temp.File("legacy.pt");
        File.WriteAllBytes(path, new byte[] { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e });
        var error = Refused(path);
        Assert.Contains("legacy torch.save format", error.Message);
        Assert.Contains("convert it to .safetensors", error.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(100)]
    public void FilesThatAreNotZipArchivesAreRefused(int length)
    {
        string path = _temp.File("text.pt");
        File.WriteAllBytes(path, Enumerable.Repeat((byte)'a', length).ToArray());
        Assert.Contains("not a PyTorch checkpoint", Refused(path).Message);
    }

    [Fact]
    public void EveryTruncationOfAValidCheckpointIsAClearError()
    {
        string full = _temp.File("full.pt");
        TorchPickleWriter.Write(full, new[]
        {
            new KeyValuePair<string, Tensor>("a", arange(6, dtype: ScalarType.Float32).reshape(2, 3)),
            new KeyValuePair<string, Tensor>("b", ones(3, dtype: ScalarType.Float16)),
        });
        var bytes = File.ReadAllBytes(full);
        string cut = _temp.File("cut.pt");
        for (int length = 0; length < bytes.Length; length++)
        {
            File.WriteAllBytes(cut, bytes[..length]);
            var error = Refused(cut);
            Assert.Equal(cut, error.FilePath);
        }

        output.WriteLine($"{bytes.Length} truncations refused");
    }

    [Fact]
    public void DamagedBytesInsideAValidCheckpointAreClearErrors()
    {
        string full = _temp.File("full.pt");
        TorchPickleWriter.Write(full, new[] { new KeyValuePair<string, Tensor>("w", arange(16, dtype: ScalarType.Float32)) });
        var bytes = File.ReadAllBytes(full);
        string damaged = _temp.File("damaged.pt");
        int refused = 0;
        for (int position = 0; position < bytes.Length; position++)
        {
            var copy = (byte[])bytes.Clone();
            copy[position] ^= 0xff;
            File.WriteAllBytes(damaged, copy);
            try
            {
                using var reader = TorchPickleReader.Open(damaged);
                foreach (var info in reader.Tensors)
                    reader.Read(info.Name).Dispose();
            }
            catch (InvalidModelFileException error)
            {
                Assert.Equal(damaged, error.FilePath);
                refused++;
            }
        }

        // The rest (bytes of the tensor data, zip timestamps and CRCs, which are not checked) load.
        output.WriteLine($"{bytes.Length} single-byte corruptions: {refused} refused, {bytes.Length - refused} loaded");
    }

    private static InvalidModelFileException Refused(string path)
    {
        var error = Assert.Throws<InvalidModelFileException>(() =>
        {
            using var reader = TorchPickleReader.Open(path);
            foreach (var info in reader.Tensors)
                reader.Read(info.Name).Dispose();
        });
        Assert.Equal(path, error.FilePath);
        Assert.StartsWith(path, error.Message);
        return error;
    }
}
