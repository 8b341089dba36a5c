using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace StableLora.IO;

/// <summary>A reference to a Python global that the pickle named (only allow-listed ones are ever created).</summary>
internal sealed record PickleGlobal(string Module, string Name)
{
    public override string ToString() => $"{Module}.{Name}";
}

/// <summary>A Python dict or OrderedDict, in insertion order.</summary>
internal sealed class PickleDict
{
    private readonly List<KeyValuePair<object, object?>> _items = new();
    private readonly Dictionary<object, int> _index = new();

    public IReadOnlyList<KeyValuePair<object, object?>> Items => _items;

    public void Set(object key, object? value)
    {
        if (_index.TryGetValue(key, out int position))
            _items[position] = new(key, value);
        else
        {
            _index[key] = _items.Count;
            _items.Add(new(key, value));
        }
    }

    public bool TryGet(object key, out object? value)
    {
        if (_index.TryGetValue(key, out int position))
        {
            value = _items[position].Value;
            return true;
        }

        value = null;
        return false;
    }
}

/// <summary>The storage a tensor views: one raw record of the archive (<c>data/&lt;key&gt;</c>).</summary>
internal sealed record PickleStorage(string StorageType, string Key, long ElementCount);

/// <summary>A tensor as <c>torch._utils._rebuild_tensor_v2</c> describes it: a strided view of a storage.</summary>
internal sealed record PickleTensor(PickleStorage Storage, long StorageOffset, long[] Shape, long[] Stride);

/// <summary>
/// A pickle virtual machine for PyTorch checkpoints that only ever builds plain data. It follows the policy of
/// <c>torch.load(weights_only=True)</c>: tensors, storages, (ordered) dicts, lists, tuples, numbers, strings and
/// bytes. Any other global (<c>os.system</c>, <c>builtins.eval</c>, a pickled class...) is refused the moment the
/// pickle names it, before anything that follows could run; nothing is ever executed.
/// </summary>
internal sealed class RestrictedUnpickler
{
    private static readonly HashSet<(string, string)> AllowedGlobals = new()
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch", "DoubleStorage"), ("torch", "FloatStorage"), ("torch", "HalfStorage"), ("torch", "BFloat16Storage"),
        ("torch", "LongStorage"), ("torch", "IntStorage"), ("torch", "ShortStorage"), ("torch", "CharStorage"),
        ("torch", "ByteStorage"), ("torch", "BoolStorage"),
        ("_codecs", "encode"),
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
        ("torch", "Size"),
    };

    private const int MaxDepthOfMarks = 10_000;

    private readonly string _path;
    private readonly byte[] _data;
    private int _position;
    private readonly List<object?> _stack = new();
    private readonly Stack<int> _marks = new();
    private readonly Dictionary<long, object?> _memo = new();

    private RestrictedUnpickler(string path, byte[] data)
    {
        _path = path;
        _data = data;
    }

    /// <summary>Runs the pickle in <paramref name="data"/> and returns its value.</summary>
    /// <param name="path">The file it came from, for messages.</param>
    /// <param name="data">The pickle bytes.</param>
    public static object? Load(string path, byte[] data) => new RestrictedUnpickler(path, data).Run();

    private object? Run()
    {
        while (true)
        {
            byte opcode = ReadByte();
            switch (opcode)
            {
                case 0x80: ReadByte(); break; // PROTO
                case 0x95: ReadBytes(8); break; // FRAME
                case (byte)'.': return Pop(); // STOP
                case (byte)'(': if (_marks.Count >= MaxDepthOfMarks) throw Fail("too many nested marks"); _marks.Push(_stack.Count); break;
                case (byte)'0': Pop(); break; // POP
                case (byte)'1': PopMark(); break; // POP_MARK
                case (byte)'2': Push(Peek()); break; // DUP
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4))); break;
                case (byte)'K': Push((long)ReadByte()); break;
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2))); break;
                case 0x8a: Push(ReadLong(ReadByte())); break; // LONG1
                case 0x8b: Push(ReadLong(ReadLength(4))); break; // LONG4
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8))); break;
                case (byte)'I': Push(ReadTextInt()); break; // INT (protocol 0)
                case (byte)'X': Push(ReadUtf8(ReadLength(4))); break; // BINUNICODE
                case 0x8c: Push(ReadUtf8(ReadByte())); break; // SHORT_BINUNICODE
                case 0x8d: Push(ReadUtf8(ReadLength(8))); break; // BINUNICODE8
                case (byte)'T': Push(Encoding.Latin1.GetString(ReadBytes(ReadLength(4)))); break; // BINSTRING
                case (byte)'U': Push(Encoding.Latin1.GetString(ReadBytes(ReadByte()))); break; // SHORT_BINSTRING
                case (byte)'B': Push(ReadBytes(ReadLength(4)).ToArray()); break; // BINBYTES
                case (byte)'C': Push(ReadBytes(ReadByte()).ToArray()); break; // SHORT_BINBYTES
                case 0x8e: Push(ReadBytes(ReadLength(8)).ToArray()); break; // BINBYTES8
                case (byte)')': Push(Array.Empty<object?>()); break;
                case (byte)'t': Push(PopMark().ToArray()); break;
                case 0x85: Push(new[] { Pop() }); break;
                case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; }
                case (byte)']': Push(new List<object?>()); break;
                case (byte)'l': Push(PopMark()); break;
                case (byte)'a': { var item = Pop(); AsList(Peek()).Add(item); break; }
                case (byte)'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; }
                case (byte)'}': Push(new PickleDict()); break;
                case (byte)'d': Push(ToDict(PopMark())); break;
                case (byte)'s': { var value = Pop(); var key = Pop(); AsDict(Peek()).Set(Hashable(key), value); break; }
                case (byte)'u': { var items = PopMark(); var dict = AsDict(Peek()); for (int i = 0; i + 1 < items.Count; i += 2) dict.Set(Hashable(items[i]), items[i + 1]); break; }
                case 0x8f: Push(new List<object?>()); break; // EMPTY_SET (kept as a list of items)
                case 0x90: { var items = PopMark(); AsList(Peek()).AddRange(items); break; } // ADDITEMS
                case 0x91: Push(PopMark()); break; // FROZENSET
                case (byte)'q': _memo[ReadByte()] = Peek(); break; // BINPUT
                case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))] = Peek(); break; // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break; // MEMOIZE
                case (byte)'p': _memo[ReadTextInt()] = Peek(); break; // PUT
                case (byte)'h': Push(Memo(ReadByte())); break; // BINGET
                case (byte)'j': Push(Memo(BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4)))); break; // LONG_BINGET
                case (byte)'g': Push(Memo(ReadTextInt())); break; // GET
                case (byte)'c': Push(Global(ReadLine(), ReadLine())); break; // GLOBAL
                case 0x93: { var name = Pop(); var module = Pop(); Push(Global(AsString(module), AsString(name))); break; } // STACK_GLOBAL
                case (byte)'Q': Push(PersistentLoad(Pop())); break; // BINPERSID
                case (byte)'R': { var args = Pop(); var callable = Pop(); Push(Call(callable, AsTuple(args))); break; } // REDUCE
                case 0x81: { var args = Pop(); var cls = Pop(); Push(Call(cls, AsTuple(args))); break; } // NEWOBJ
                case (byte)'b': { var state = Pop(); Build(Peek(), state); break; } // BUILD
                default:
                    throw Fail($"pickle opcode 0x{opcode:x2} is not allowed in a weights file");
            }
        }
    }

    private object Global(string module, string name)
    {
        if (!AllowedGlobals.Contains((module, name)))
            throw Fail($"the pickle refers to the Python global '{module}.{name}', which a weights file never needs; " +
                       "it was refused before anything ran (StableLora loads pickles with the policy of torch.load(weights_only=True); " +
                       "convert the file to .safetensors if you trust it)");
        return new PickleGlobal(module, name);
    }

    private object PersistentLoad(object? pid)
    {
        var tuple = AsTuple(pid);
        if (tuple.Length < 5 || tuple[0] is not string kind || kind != "storage")
            throw Fail("unsupported persistent id (expected a torch storage reference)");
        if (tuple[1] is not PickleGlobal storageType)
            throw Fail("the storage reference has no storage type");
        string key = tuple[2] as string ?? throw Fail("the storage reference has no archive key");
        long count = tuple[4] is long n ? n : throw Fail("the storage reference has no element count");
        if (count < 0)
            throw Fail($"storage '{key}' declares a negative element count");
        return new PickleStorage(storageType.Name, key, count);
    }

    private object? Call(object? callable, object?[] args)
    {
        if (callable is not PickleGlobal global)
            throw Fail("the pickle calls something that is not an allowed global");

        switch (global.Module, global.Name)
        {
            case ("collections", "OrderedDict"):
                return new PickleDict();
            case ("torch._utils", "_rebuild_tensor"):
            case ("torch._utils", "_rebuild_tensor_v2"):
                if (args.Length < 4 || args[0] is not PickleStorage storage)
                    throw Fail("_rebuild_tensor called without a storage");
                return new PickleTensor(storage, AsLong(args[1]), AsLongs(args[2]), AsLongs(args[3]));
            case ("torch._utils", "_rebuild_parameter"):
            case ("torch._utils", "_rebuild_parameter_with_state"):
                return args.Length > 0 && args[0] is PickleTensor tensor ? tensor : throw Fail("_rebuild_parameter called without a tensor");
            case ("_codecs", "encode"):
                return args.Length > 0 && args[0] is string text ? Encoding.Latin1.GetBytes(text) : Array.Empty<byte>();
            case ("builtins", "set"):
            case ("builtins", "frozenset"):
            case ("torch", "Size"):
                return args.Length > 0 && args[0] is List<object?> list ? list.ToArray() : args.Length > 0 ? args[0] : Array.Empty<object?>();
            case ("builtins", "bytearray"):
                return args.Length > 0 && args[0] is byte[] bytes ? bytes : Array.Empty<byte>();
            default:
                throw Fail($"'{global}' cannot be called");
        }
    }

    private void Build(object? target, object? state)
    {
        // OrderedDict state (e.g. a state_dict's _metadata) carries no tensors a loader needs; tensors ignore BUILD too.
        if (target is PickleDict or PickleTensor)
            return;
        throw Fail("the pickle sets state on an object that is not a dict or tensor");
    }

    private PickleDict ToDict(List<object?> items)
    {
        var dict = new PickleDict();
        for (int i = 0; i + 1 < items.Count; i += 2)
            dict.Set(Hashable(items[i]), items[i + 1]);
        return dict;
    }

    private object Hashable(object? key) => key switch
    {
        string or long or double or bool => key,
        object?[] tuple => string.Join(",", tuple),
        _ => throw Fail("a dict key is not a string or number"),
    };

    private object? Memo(long index) => _memo.TryGetValue(index, out var value) ? value : throw Fail($"memo entry {index} is missing");

    private void Push(object? value) => _stack.Add(value);

    private object? Peek() => _stack.Count > 0 ? _stack[^1] : throw Fail("stack underflow");

    private object? Pop()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _stack.Count <= _marks.Peek()))
            throw Fail("stack underflow");
        var value = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private List<object?> PopMark()
    {
        if (_marks.Count == 0)
            throw Fail("mark stack underflow");
        int mark = _marks.Pop();
        var items = _stack.GetRange(mark, _stack.Count - mark);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }

    private List<object?> AsList(object? value) => value as List<object?> ?? throw Fail("expected a list on the stack");

    private PickleDict AsDict(object? value) => value as PickleDict ?? throw Fail("expected a dict on the stack");

    private object?[] AsTuple(object? value) => value switch
    {
        object?[] tuple => tuple,
        List<object?> list => list.ToArray(),
        _ => throw Fail("expected a tuple on the stack"),
    };

    private string AsString(object? value) => value as string ?? throw Fail("expected a string on the stack");

    private long AsLong(object? value) => value is long n ? n : throw Fail("expected an integer");

    private long[] AsLongs(object? value) => AsTuple(value).Select(AsLong).ToArray();

    private byte ReadByte()
    {
        if (_position >= _data.Length)
            throw Fail("the pickle ends early (truncated file?)");
        return _data[_position++];
    }

    private ReadOnlySpan<byte> ReadBytes(long count)
    {
        if (count < 0 || count > _data.Length - _position)
            throw Fail("the pickle ends early (truncated file?)");
        var span = _data.AsSpan(_position, (int)count);
        _position += (int)count;
        return span;
    }

    private long ReadLength(int width)
    {
        long length = width == 4
            ? BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))
            : (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(ReadBytes(8)), long.MaxValue);
        if (length > _data.Length - _position)
            throw Fail($"a {length}-byte item reaches past the end of the pickle");
        return length;
    }

    private string ReadUtf8(long length) => Encoding.UTF8.GetString(ReadBytes(length));

    private long ReadLong(long length)
    {
        if (length > 8)
            throw Fail("integer too large for a weights file");
        var value = new BigInteger(ReadBytes(length), isUnsigned: false, isBigEndian: false);
        return (long)value;
    }

    private string ReadLine()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _position);
        if (end < 0)
            throw Fail("the pickle ends early (truncated file?)");
        string line = Encoding.ASCII.GetString(_data, _position, end - _position);
        _position = end + 1;
        return line;
    }

    private long ReadTextInt()
    {
        string line = ReadLine();
        return line switch
        {
            "00" => 0,
            "01" => 1,
            _ => long.TryParse(line, out long value) ? value : throw Fail($"'{line}' is not an integer"),
        };
    }

    private InvalidModelFileException Fail(string message) => new(_path, null, $"{message} (pickle offset {_position})");
}
