using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// Decodes HTML character references the cautious way ftfy does: only complete references that end in ';' (named
/// ones from the HTML5 list, all-caps spellings of lower-case names, and numeric ones), never "&amp;amp" without
/// its semicolon.
/// </summary>
internal static class HtmlEntityDecoder
{
    private const string EntityTableResource = "StableLora.tokenizer/html-entities.txt";

    private static readonly Regex Reference = new("&#?[0-9A-Za-z]{1,24};", RegexOptions.CultureInvariant);

    private static readonly Lazy<Dictionary<string, string>> NamedReferences = new(LoadNamedReferences);

    public static string Unescape(string text) => text.Contains('&') ? Reference.Replace(text, Decode) : text;

    private static string Decode(Match match)
    {
        string reference = match.Value;
        if (NamedReferences.Value.TryGetValue(reference, out string? named))
            return named;
        if (!reference.StartsWith("&#", StringComparison.Ordinal))
            return reference;
        string? numeric = DecodeNumeric(reference[2..^1]);
        // A decoded ';' would mean the reference was only partly a character reference; keep the original then.
        return numeric is null || numeric.Contains(';') ? reference : numeric;
    }

    /// <summary>The HTML5 decoding of a numeric reference "&amp;#body;", or null when body is not all digits.</summary>
    private static string? DecodeNumeric(string body)
    {
        bool hex = body[0] is 'x' or 'X';
        string digits = hex ? body[1..] : body;
        if (digits.Length == 0 || !digits.All(c => hex ? char.IsAsciiHexDigit(c) : char.IsAsciiDigit(c)))
            return null;
        long value = 0;
        foreach (char digit in digits)
        {
            value = value * (hex ? 16 : 10) + int.Parse(digit.ToString(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (value > 0x10FFFF)
                return "\uFFFD";
        }

        int codePoint = (int)value;
        if (codePoint == 0)
            return "\uFFFD";
        if (codePoint == 0x0D)
            return "\r";
        if (codePoint is >= 0x80 and <= 0x9F)
            return SingleByteCodec.SloppyWindows1252.Decode((byte)codePoint).ToString();
        if (codePoint is >= 0xD800 and <= 0xDFFF)
            return "\uFFFD";
        if (IsForbiddenInHtml(codePoint))
            return string.Empty;
        return char.ConvertFromUtf32(codePoint);
    }

    private static bool IsForbiddenInHtml(int codePoint) =>
        codePoint is >= 0x01 and <= 0x08 or 0x0B or >= 0x0E and <= 0x1F or 0x7F or >= 0xFDD0 and <= 0xFDEF
        || (codePoint & 0xFFFE) == 0xFFFE;

    private static Dictionary<string, string> LoadNamedReferences()
    {
        using Stream stream = typeof(HtmlEntityDecoder).Assembly.GetManifestResourceStream(EntityTableResource)
            ?? throw new InvalidOperationException($"Embedded resource {EntityTableResource} is missing.");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var table = new Dictionary<string, string>(StringComparer.Ordinal);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line[0] == '#')
                continue;
            int tab = line.IndexOf('\t');
            table[line[..tab]] = string.Concat(line[(tab + 1)..].Split(' ')
                .Select(hex => char.ConvertFromUtf32(int.Parse(hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture))));
        }

        return table;
    }
}
