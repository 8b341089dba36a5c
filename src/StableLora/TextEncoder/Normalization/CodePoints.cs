using System.Text;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// The reference code (Python) sees a string as a sequence of code points. These helpers give a .NET string the same
/// view: a surrogate pair is one code point, a lone surrogate is a code point of its own.
/// </summary>
internal static class CodePoints
{
    public static int[] Of(string text)
    {
        var result = new List<int>(text.Length);
        for (int i = 0; i < text.Length; i += WidthAt(text, i))
            result.Add(At(text, i));
        return result.ToArray();
    }

    public static int At(string text, int index)
    {
        char c = text[index];
        if (char.IsHighSurrogate(c) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1]))
            return char.ConvertToUtf32(c, text[index + 1]);
        return c;
    }

    /// <summary>The number of UTF-16 units of the code point at <paramref name="index"/>.</summary>
    public static int WidthAt(string text, int index) =>
        char.IsHighSurrogate(text[index]) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1]) ? 2 : 1;

    public static void Append(StringBuilder builder, int codePoint)
    {
        if (codePoint >= 0x10000)
            builder.Append(char.ConvertFromUtf32(codePoint));
        else
            builder.Append((char)codePoint);
    }

    /// <summary>Applies a per-code-point replacement (Python's <c>str.translate</c>); null keeps the code point.</summary>
    public static string Translate(string text, Func<int, string?> replacement)
    {
        StringBuilder? builder = null;
        for (int i = 0; i < text.Length;)
        {
            int codePoint = At(text, i);
            int width = WidthAt(text, i);
            string? replaced = replacement(codePoint);
            if (replaced is not null && builder is null)
                builder = new StringBuilder(text.Length).Append(text, 0, i);
            if (builder is not null)
            {
                if (replaced is null)
                    builder.Append(text, i, width);
                else
                    builder.Append(replaced);
            }

            i += width;
        }

        return builder?.ToString() ?? text;
    }
}
