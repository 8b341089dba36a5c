using System.Text;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// Strict UTF-8 decoding (no overlong forms, no encoded surrogates, nothing above U+10FFFF) that also accepts the two
/// common variants mojibake comes from: Java's "modified UTF-8" NUL (C0 80) and CESU-8, where a supplementary
/// character is written as the UTF-8 forms of its two UTF-16 surrogates (six bytes, ED A0-AF xx ED B0-BF xx).
/// </summary>
internal static class Utf8VariantsDecoder
{
    /// <summary>The decoded text, or null when the bytes are not (variant) UTF-8.</summary>
    public static string? TryDecode(ReadOnlySpan<byte> bytes)
    {
        var builder = new StringBuilder(bytes.Length);
        int i = 0;
        while (i < bytes.Length)
        {
            int consumed = TryDecodeOne(bytes[i..], out int codePoint);
            if (consumed == 0)
                return null;
            CodePoints.Append(builder, codePoint);
            i += consumed;
        }

        return builder.ToString();
    }

    private static int TryDecodeOne(ReadOnlySpan<byte> b, out int codePoint)
    {
        codePoint = 0;
        byte lead = b[0];
        if (lead < 0x80)
        {
            codePoint = lead;
            return 1;
        }

        if (lead == 0xC0 && b.Length >= 2 && b[1] == 0x80)
            return 2;

        if (IsCesu8SurrogatePair(b))
        {
            codePoint = 0x10000 + ((b[1] & 0x0F) << 16) + ((b[2] & 0x3F) << 10) + ((b[4] & 0x0F) << 6) + (b[5] & 0x3F);
            return 6;
        }

        // Allowed range of the second byte for each lead byte (the rest of the continuation bytes are 80-BF).
        (int length, byte secondMin, byte secondMax) = lead switch
        {
            >= 0xC2 and <= 0xDF => (2, (byte)0x80, (byte)0xBF),
            0xE0 => (3, (byte)0xA0, (byte)0xBF),
            0xED => (3, (byte)0x80, (byte)0x9F),
            >= 0xE1 and <= 0xEF => (3, (byte)0x80, (byte)0xBF),
            0xF0 => (4, (byte)0x90, (byte)0xBF),
            >= 0xF1 and <= 0xF3 => (4, (byte)0x80, (byte)0xBF),
            0xF4 => (4, (byte)0x80, (byte)0x8F),
            _ => (0, (byte)0, (byte)0),
        };
        if (length == 0 || b.Length < length || b[1] < secondMin || b[1] > secondMax)
            return 0;
        codePoint = lead & (0xFF >> (length + 1));
        for (int k = 1; k < length; k++)
        {
            if (b[k] is < 0x80 or > 0xBF)
                return 0;
            codePoint = (codePoint << 6) | (b[k] & 0x3F);
        }

        return length;
    }

    private static bool IsCesu8SurrogatePair(ReadOnlySpan<byte> b) =>
        b.Length >= 6 && b[0] == 0xED && b[1] is >= 0xA0 and <= 0xAF && b[2] is >= 0x80 and <= 0xBF
        && b[3] == 0xED && b[4] is >= 0xB0 and <= 0xBF && b[5] is >= 0x80 and <= 0xBF;
}
