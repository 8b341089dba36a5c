using System.Buffers.Binary;

namespace StableLora.Data;

/// <summary>
/// The first frame of an animated WebP, which ImageSharp 2.1 refuses to decode at all: the frame's own bitstream
/// chunks (ALPH and VP8, or VP8L) are re-wrapped as a still WebP that it does decode, and placed on the canvas.
/// </summary>
internal static class AnimatedWebp
{
    private const byte AnimationFlag = 0x02;
    private const byte AlphaFlag = 0x10;

    /// <summary>The canvas size when <paramref name="data"/> is an animated WebP, else null.</summary>
    public static (int Width, int Height)? Canvas(ReadOnlySpan<byte> data)
    {
        if (data.Length < 30 || !data.StartsWith("RIFF"u8) || !data.Slice(8, 4).SequenceEqual("WEBP"u8)
            || !data.Slice(12, 4).SequenceEqual("VP8X"u8) || (data[20] & AnimationFlag) == 0)
            return null;
        return (ReadUInt24(data.Slice(24)) + 1, ReadUInt24(data.Slice(27)) + 1);
    }

    /// <summary>The first frame as a still WebP, and where it sits on the canvas; null when the file has no complete frame.</summary>
    public static (byte[] Still, int X, int Y)? FirstFrame(ReadOnlySpan<byte> data)
    {
        int position = 12;
        while (position + 8 <= data.Length)
        {
            var fourCc = data.Slice(position, 4);
            long size = BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(position + 4, 4));
            if (position + 8 + size > data.Length)
                return null;
            if (fourCc.SequenceEqual("ANMF"u8) && size >= 16)
                return Frame(data.Slice(position + 8, (int)size));
            position += 8 + (int)size + (int)(size & 1);
        }

        return null;
    }

    private static (byte[] Still, int X, int Y) Frame(ReadOnlySpan<byte> payload)
    {
        int x = 2 * ReadUInt24(payload), y = 2 * ReadUInt24(payload.Slice(3));
        int width = ReadUInt24(payload.Slice(6)) + 1, height = ReadUInt24(payload.Slice(9)) + 1;
        var bitstream = payload.Slice(16);
        bool hasAlpha = bitstream.Length >= 4 && bitstream.StartsWith("ALPH"u8);

        using var still = new MemoryStream();
        still.Write("RIFF\0\0\0\0WEBP"u8);
        if (hasAlpha)
        {
            // A lossy frame with an alpha chunk needs the extended header.
            Span<byte> header = stackalloc byte[18];
            "VP8X"u8.CopyTo(header);
            BinaryPrimitives.WriteUInt32LittleEndian(header.Slice(4), 10);
            header[8] = AlphaFlag;
            WriteUInt24(header.Slice(12), width - 1);
            WriteUInt24(header.Slice(15), height - 1);
            still.Write(header);
        }

        still.Write(bitstream);
        byte[] bytes = still.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), (uint)(bytes.Length - 8));
        return (bytes, x, y);
    }

    private static int ReadUInt24(ReadOnlySpan<byte> bytes) => bytes[0] | bytes[1] << 8 | bytes[2] << 16;

    private static void WriteUInt24(Span<byte> bytes, int value)
    {
        bytes[0] = (byte)value;
        bytes[1] = (byte)(value >> 8);
        bytes[2] = (byte)(value >> 16);
    }
}
