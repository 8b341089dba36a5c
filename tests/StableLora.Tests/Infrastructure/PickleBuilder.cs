using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace StableLora.Tests.Infrastructure;

/// <summary>Writes pickle opcodes by hand, for hostile and broken checkpoints that no Python would write.</summary>
internal sealed class PickleBuilder
{
    private readonly List<byte> _bytes = new() { 0x80, 0x02 };

    public byte[] ToArray() => _bytes.ToArray();

    public PickleBuilder Op(char opcode) => Op((byte)opcode);

    public PickleBuilder Op(byte opcode)
    {
        _bytes.Add(opcode);
        return this;
    }

    public PickleBuilder Raw(params byte[] bytes)
    {
        _bytes.AddRange(bytes);
        return this;
    }

    public PickleBuilder Mark() => Op('(');

    public PickleBuilder Stop() => Op('.');

    /// <summary>GLOBAL: <c>c module\nname\n</c>.</summary>
    public PickleBuilder Global(string module, string name) => Op('c').Raw(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    /// <summary>STACK_GLOBAL with the names pushed as strings first.</summary>
    public PickleBuilder StackGlobal(string module, string name) => Str(module).Str(name).Op(0x93);

    /// <summary>BINUNICODE.</summary>
    public PickleBuilder Str(string text)
    {
        var utf8 = Encoding.UTF8.GetBytes(text);
        Op('X');
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(length, utf8.Length);
        return Raw(length.ToArray()).Raw(utf8);
    }

    /// <summary>BININT (4-byte signed) or LONG1 for larger values.</summary>
    public PickleBuilder Int(long value)
    {
        if (value is >= int.MinValue and <= int.MaxValue)
        {
            Op('J');
            Span<byte> bytes = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(bytes, (int)value);
            return Raw(bytes.ToArray());
        }

        Op(0x8a).Raw(8);
        Span<byte> wide = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(wide, value);
        return Raw(wide.ToArray());
    }

    public PickleBuilder Tuple(params long[] values)
    {
        Mark();
        foreach (long value in values)
            Int(value);
        return Op('t');
    }

    /// <summary>The start of a state dict: <c>collections.OrderedDict()</c> then MARK for SETITEMS.</summary>
    public PickleBuilder BeginStateDict() => Global("collections", "OrderedDict").Op(')').Op('R').Mark();

    public PickleBuilder EndStateDict() => Op('u').Stop();

    /// <summary>A tensor as torch.save writes it: <c>_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())</c>.</summary>
    public PickleBuilder Tensor(string storageType, string key, long storageElements, long offset, long[] shape, long[] stride)
    {
        Global("torch._utils", "_rebuild_tensor_v2");
        Mark();
        Mark().Str("storage").Global("torch", storageType).Str(key).Str("cpu").Int(storageElements).Op('t').Op('Q');
        Int(offset).Tuple(shape).Tuple(stride).Op(0x89).Global("collections", "OrderedDict").Op(')').Op('R');
        return Op('t').Op('R');
    }

    /// <summary>A one-entry state dict holding one float32 tensor.</summary>
    public static byte[] OneTensor(string name, long storageElements, long offset, long[] shape, long[] stride, string storageType = "FloatStorage") =>
        new PickleBuilder().BeginStateDict().Str(name).Tensor(storageType, "0", storageElements, offset, shape, stride).EndStateDict().ToArray();

    /// <summary>Writes a torch.save-style zip: <c>archive/data.pkl</c>, the given <c>archive/data/&lt;key&gt;</c> records and a version.</summary>
    public static void WriteArchive(string path, byte[] pickle, IReadOnlyDictionary<string, byte[]>? records = null)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var stream = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open())
            stream.Write(pickle);
        foreach (var (key, data) in records ?? new Dictionary<string, byte[]>())
        {
            using var stream = zip.CreateEntry($"archive/data/{key}", CompressionLevel.NoCompression).Open();
            stream.Write(data);
        }

        using (var stream = zip.CreateEntry("archive/version", CompressionLevel.NoCompression).Open())
            stream.Write("3\n"u8);
    }
}
