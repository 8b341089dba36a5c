using System.Text;

namespace StableLora.TextEncoder.Normalization;

/// <summary>The character-level fixes of ftfy 6.1.1 that run after mojibake repair, each as the reference does it.</summary>
internal static class CharacterFixes
{
    private static readonly Dictionary<int, string> LatinLigatures = new()
    {
        [0x0132] = "IJ", [0x0133] = "ij", [0x0149] = "\u02BCn",
        [0x01F1] = "DZ", [0x01F2] = "Dz", [0x01F3] = "dz",
        [0x01C4] = "D\u017D", [0x01C5] = "D\u017E", [0x01C6] = "d\u017E",
        [0x01C7] = "LJ", [0x01C8] = "Lj", [0x01C9] = "lj",
        [0x01CA] = "NJ", [0x01CB] = "Nj", [0x01CC] = "nj",
        [0xFB00] = "ff", [0xFB01] = "fi", [0xFB02] = "fl", [0xFB03] = "ffi", [0xFB04] = "ffl",
        [0xFB05] = "\u017Ft", [0xFB06] = "st",
    };

    private static readonly Dictionary<int, string> StandardWidths = BuildWidthMap();

    /// <summary>Replaces C1 controls (U+0080-U+009F) by the Windows-1252 characters of the same byte, as browsers do.</summary>
    public static string FixC1Controls(string text) =>
        CodePoints.Translate(text, c => c is >= 0x80 and <= 0x9F ? SingleByteCodec.SloppyWindows1252.Decode((byte)c).ToString() : null);

    public static bool HasC1Controls(string text) => text.Any(c => c is >= '\u0080' and <= '\u009F');

    /// <summary>Splits Latin typographic ligatures and legacy digraphs ("ﬁ" to "fi"); other scripts are left alone.</summary>
    public static string FixLatinLigatures(string text) =>
        CodePoints.Translate(text, c => LatinLigatures.GetValueOrDefault(c));

    /// <summary>Fullwidth and halfwidth forms (and the ideographic space) to their ordinary-width characters.</summary>
    public static string FixCharacterWidth(string text) =>
        CodePoints.Translate(text, c => StandardWidths.GetValueOrDefault(c));

    /// <summary>Curly single quotes (and U+02BC) to "'", curly double quotes to '"'.</summary>
    public static string UncurlQuotes(string text) => CodePoints.Translate(text, c => c switch
    {
        0x02BC or >= 0x2018 and <= 0x201B => "'",
        >= 0x201C and <= 0x201F => "\"",
        _ => null,
    });

    public static string FixLineBreaks(string text) => text
        .Replace("\r\n", "\n", StringComparison.Ordinal)
        .Replace('\r', '\n')
        .Replace('\u2028', '\n')
        .Replace('\u2029', '\n')
        .Replace('\u0085', '\n');

    /// <summary>Lone UTF-16 surrogates become U+FFFD (well-formed pairs are already one code point in .NET).</summary>
    public static string FixSurrogates(string text) =>
        CodePoints.Translate(text, c => c is >= 0xD800 and <= 0xDFFF ? "\uFFFD" : null);

    /// <summary>Removes ANSI terminal escapes: ESC '[' then decimal digits or ';' then an ASCII letter.</summary>
    public static string RemoveTerminalEscapes(string text)
    {
        if (!text.Contains('\u001B'))
            return text;
        var builder = new StringBuilder(text.Length);
        int i = 0;
        while (i < text.Length)
        {
            int end = TerminalEscapeEnd(text, i);
            if (end > i)
            {
                i = end;
            }
            else
            {
                builder.Append(text[i]);
                i++;
            }
        }

        return builder.ToString();
    }

    /// <summary>Removes control characters that have no visible effect (keeping whitespace and formatting controls).</summary>
    public static string RemoveControlCharacters(string text) =>
        CodePoints.Translate(text, c => IsRemovableControl(c) ? string.Empty : null);

    private static bool IsRemovableControl(int c) =>
        c is <= 0x08 or 0x0B or >= 0x0E and <= 0x1F or 0x7F or >= 0x206A and <= 0x206F or 0xFEFF or >= 0xFFF9 and <= 0xFFFC;

    private static int TerminalEscapeEnd(string text, int start)
    {
        if (text[start] != '\u001B' || start + 1 >= text.Length || text[start + 1] != '[')
            return start;
        int i = start + 2;
        while (i < text.Length)
        {
            int codePoint = CodePoints.At(text, i);
            if (codePoint != ';' && !PythonText.IsDecimalDigit(codePoint))
                break;
            i += CodePoints.WidthAt(text, i);
        }

        return i < text.Length && char.IsAsciiLetter(text[i]) ? i + 1 : start;
    }

    private static Dictionary<int, string> BuildWidthMap()
    {
        var map = new Dictionary<int, string> { [0x3000] = " " };
        for (int c = 0xFF01; c < 0xFFF0; c++)
        {
            string original = ((char)c).ToString();
            string compatible = original.Normalize(NormalizationForm.FormKC);
            if (compatible != original)
                map[c] = compatible;
        }

        return map;
    }
}
