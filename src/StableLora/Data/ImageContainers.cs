using System.Buffers.Binary;

namespace StableLora.Data;

/// <summary>
/// Structural checks of an image file's container, done before decoding because ImageSharp decodes several truncated
/// formats without complaint (the missing part comes out black or transparent): the file must reach the end of its
/// JPEG scan data (EOI), its PNG IEND chunk, its first GIF frame, its declared RIFF (WebP) size, or its BMP pixel rows.
/// </summary>
internal static class ImageContainers
{
    /// <summary>Why the file is cut short or malformed, or null when its container is complete (or not one checked here).</summary>
    public static string? FindDamage(ReadOnlySpan<byte> data)
    {
        if (data.StartsWith(PngSignature))
            return Png(data);
        if (data.Length >= 2 && data[0] == 0xFF && data[1] == 0xD8)
            return Jpeg(data);
        if (data.StartsWith("GIF87a"u8) || data.StartsWith("GIF89a"u8))
            return Gif(data);
        if (data.Length >= 12 && data.StartsWith("RIFF"u8) && data.Slice(8, 4).SequenceEqual("WEBP"u8))
            return Riff(data);
        if (data.StartsWith("BM"u8))
            return Bmp(data);
        return null;
    }

    private static ReadOnlySpan<byte> PngSignature => new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A };

    private const string Truncated = "(truncated download or copy?)";

    private static string? Png(ReadOnlySpan<byte> data)
    {
        long position = 8;
        while (position + 8 <= data.Length)
        {
            long length = BinaryPrimitives.ReadUInt32BigEndian(data.Slice((int)position, 4));
            string type = System.Text.Encoding.ASCII.GetString(data.Slice((int)position + 4, 4));
            if (position + 12 + length > data.Length)
                return $"the file ends inside its PNG '{type}' chunk {Truncated}";
            if (type == "IEND")
                return null;
            position += 12 + length;
        }

        return $"the file ends before the PNG's IEND chunk {Truncated}";
    }

    private static string? Jpeg(ReadOnlySpan<byte> data)
    {
        int position = 2;
        while (true)
        {
            // Markers are 0xFF (any number of fill bytes) then a code; tolerate stray bytes between segments as decoders do.
            while (position < data.Length && data[position] != 0xFF)
                position++;
            while (position < data.Length && data[position] == 0xFF)
                position++;
            if (position >= data.Length)
                return $"the file ends before the JPEG's end-of-image marker {Truncated}";

            byte marker = data[position++];
            if (marker == 0xD9)
                return null;
            if (marker is 0x01 or >= 0xD0 and <= 0xD7)
                continue;
            if (position + 2 > data.Length)
                return $"the file ends inside a JPEG marker {Truncated}";
            int length = BinaryPrimitives.ReadUInt16BigEndian(data.Slice(position, 2));
            if (length < 2 || position + length > data.Length)
                return $"the file ends inside the JPEG's 0x{marker:X2} segment {Truncated}";
            position += length;
            if (marker != 0xDA)
                continue;

            // Entropy-coded scan data: it ends at the first marker that is neither a stuffed 0xFF00 nor a restart.
            while (position + 1 < data.Length && !(data[position] == 0xFF && data[position + 1] != 0x00 && data[position + 1] is < 0xD0 or > 0xD7))
                position++;
            if (position + 1 >= data.Length)
                return $"the file ends inside the JPEG's scan data {Truncated}";
        }
    }

    private static string? Gif(ReadOnlySpan<byte> data)
    {
        if (data.Length < 13)
            return $"the file ends inside the GIF header {Truncated}";
        int position = 13;
        byte screenFlags = data[10];
        if ((screenFlags & 0x80) != 0)
            position += 3 << ((screenFlags & 7) + 1);

        while (position < data.Length)
        {
            byte block = data[position++];
            switch (block)
            {
                case 0x21:
                    position++;
                    if (!SkipSubBlocks(data, ref position))
                        return $"the file ends inside a GIF extension {Truncated}";
                    break;
                case 0x2C:
                    if (position + 9 > data.Length)
                        return $"the file ends inside the GIF's first frame {Truncated}";
                    byte imageFlags = data[position + 8];
                    position += 9;
                    if ((imageFlags & 0x80) != 0)
                        position += 3 << ((imageFlags & 7) + 1);
                    position++;
                    return SkipSubBlocks(data, ref position) ? null : $"the file ends inside the GIF's first frame {Truncated}";
                case 0x3B:
                    return "the GIF holds no image";
                default:
                    return $"unexpected GIF block 0x{block:X2} before the first frame";
            }
        }

        return $"the file ends before the GIF's first frame {Truncated}";
    }

    private static bool SkipSubBlocks(ReadOnlySpan<byte> data, ref int position)
    {
        while (position < data.Length)
        {
            int size = data[position++];
            if (size == 0)
                return true;
            position += size;
        }

        return false;
    }

    private static string? Riff(ReadOnlySpan<byte> data)
    {
        long declared = 8L + BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(4, 4));
        return declared > data.Length ? $"the file is {data.Length} bytes but its RIFF header declares {declared} {Truncated}" : null;
    }

    private static string? Bmp(ReadOnlySpan<byte> data)
    {
        if (data.Length < 30)
            return $"the file ends inside the BMP header {Truncated}";
        long declared = BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(2, 4));
        if (declared > data.Length)
            return $"the file is {data.Length} bytes but its BMP header declares {declared} {Truncated}";

        long pixelOffset = BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(10, 4));
        long headerSize = BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(14, 4));
        if (headerSize < 40 || data.Length < 34)
            return null;
        long width = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(data.Slice(18, 4)));
        long height = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(data.Slice(22, 4)));
        int bitsPerPixel = BinaryPrimitives.ReadUInt16LittleEndian(data.Slice(28, 2));
        uint compression = BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(30, 4));
        if (compression is not (0 or 3) || bitsPerPixel is 0 or > 64 || width > int.MaxValue / 64)
            return null;
        long needed = pixelOffset + (bitsPerPixel * width + 31) / 32 * 4 * height;
        return needed > data.Length ? $"the file is {data.Length} bytes but its {width}x{height} pixel rows need {needed} {Truncated}" : null;
    }
}
