namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// A single-byte character set that mojibake repair tries to undo, as Python decodes it. Bytes 0x00-0x7F are ASCII in
/// all of them. "Sloppy" Windows code pages pass their undefined bytes through as the Latin-1 code points (U+0081, ...)
/// and use byte 0x1A for U+FFFD, so that text holding replacement characters can still be re-encoded.
/// </summary>
internal sealed partial class SingleByteCodec
{
    private const int Substitute = 0x1A;
    private const int ReplacementCharacter = 0xFFFD;

    private readonly string _highHalf;
    private readonly Dictionary<int, byte> _bytesByHighCodePoint;

    private SingleByteCodec(string name, string highHalf, bool isSloppy)
    {
        if (highHalf.Length != 128)
            throw new ArgumentException("A code page table needs 128 characters.", nameof(highHalf));
        Name = name;
        IsSloppy = isSloppy;
        _highHalf = highHalf;
        _bytesByHighCodePoint = highHalf.Select((c, i) => (c, i)).ToDictionary(x => (int)x.c, x => (byte)(0x80 + x.i));
    }

    public static SingleByteCodec Latin1 { get; } = new("latin-1", Latin1High, isSloppy: false);

    public static SingleByteCodec SloppyWindows1252 { get; } = new("sloppy-windows-1252", Windows1252High, isSloppy: true);

    /// <summary>The encodings mojibake repair tries, in the reference's order.</summary>
    public static IReadOnlyList<SingleByteCodec> MojibakeCandidates { get; } =
    [
        Latin1,
        SloppyWindows1252,
        new("sloppy-windows-1251", Windows1251High, isSloppy: true),
        new("sloppy-windows-1250", Windows1250High, isSloppy: true),
        new("sloppy-windows-1253", Windows1253High, isSloppy: true),
        new("sloppy-windows-1254", Windows1254High, isSloppy: true),
        new("iso-8859-2", Iso8859_2High, isSloppy: false),
        new("macroman", MacRomanHigh, isSloppy: false),
        new("cp437", Cp437High, isSloppy: false),
    ];

    public string Name { get; }

    public bool IsSloppy { get; }

    /// <summary>Whether every code point of <paramref name="text"/> has a byte in this character set.</summary>
    public bool CanEncode(string text)
    {
        for (int i = 0; i < text.Length; i += CodePoints.WidthAt(text, i))
        {
            if (!TryEncode(CodePoints.At(text, i), out _))
                return false;
        }

        return true;
    }

    public byte[] Encode(string text)
    {
        var bytes = new List<byte>(text.Length);
        for (int i = 0; i < text.Length; i += CodePoints.WidthAt(text, i))
        {
            if (!TryEncode(CodePoints.At(text, i), out byte value))
                throw new ArgumentException($"The text cannot be encoded as {Name}.", nameof(text));
            bytes.Add(value);
        }

        return bytes.ToArray();
    }

    public char Decode(byte value) => value switch
    {
        Substitute when IsSloppy => (char)ReplacementCharacter,
        < 0x80 => (char)value,
        _ => _highHalf[value - 0x80],
    };

    private bool TryEncode(int codePoint, out byte value)
    {
        if (IsSloppy && codePoint == ReplacementCharacter)
        {
            value = Substitute;
            return true;
        }

        if (codePoint < 0x80 && !(IsSloppy && codePoint == Substitute))
        {
            value = (byte)codePoint;
            return true;
        }

        return _bytesByHighCodePoint.TryGetValue(codePoint, out value);
    }
}
