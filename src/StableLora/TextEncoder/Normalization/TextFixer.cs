using System.Text;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// ftfy 6.1.1's <c>fix_text</c> with its default configuration, which is what the reference CLIP tokenizer applies to
/// every prompt: the text is fixed line by line, and each line is put through the whole chain of fixes until it no
/// longer changes.
/// </summary>
internal static class TextFixer
{
    private const int MaxSegmentCodePoints = 1_000_000;

    public static string FixText(string text)
    {
        var output = new StringBuilder(text.Length);
        // HTML entities are decoded unless the text looks like real HTML, i.e. contains '<'. Once a line with '<' has
        // been seen, the following lines are not decoded either.
        bool unescapeHtml = true;
        foreach (string segment in Segments(text))
        {
            if (segment.Contains('<'))
                unescapeHtml = false;
            output.Append(FixSegment(segment, unescapeHtml));
        }

        return output.ToString();
    }

    private static string FixSegment(string text, bool unescapeHtml)
    {
        while (true)
        {
            string original = text;
            if (unescapeHtml)
                text = HtmlEntityDecoder.Unescape(text);
            text = MojibakeFixer.FixEncoding(text);
            text = CharacterFixes.FixC1Controls(text);
            text = CharacterFixes.FixLatinLigatures(text);
            text = CharacterFixes.FixCharacterWidth(text);
            text = CharacterFixes.UncurlQuotes(text);
            text = CharacterFixes.FixLineBreaks(text);
            text = CharacterFixes.FixSurrogates(text);
            text = CharacterFixes.RemoveTerminalEscapes(text);
            text = CharacterFixes.RemoveControlCharacters(text);
            text = ToNfc(text);
            if (text == original)
                return text;
        }
    }

    /// <summary>
    /// NFC, as Python's <c>unicodedata</c> does it. .NET refuses strings holding the noncharacter U+FFFE; it has no
    /// decomposition and composes with nothing, so the text on either side of it is normalized on its own.
    /// </summary>
    private static string ToNfc(string text)
    {
        if (!text.Contains('\uFFFE'))
            return text.Normalize(NormalizationForm.FormC);
        return string.Join('\uFFFE', text.Split('\uFFFE').Select(part => part.Normalize(NormalizationForm.FormC)));
    }

    /// <summary>Lines, each with its '\n'; a line longer than the reference's limit is cut every million code points.</summary>
    private static IEnumerable<string> Segments(string text)
    {
        int position = 0;
        while (position < text.Length)
        {
            int lineEnd = text.IndexOf('\n', position);
            int end = lineEnd < 0 ? text.Length : lineEnd + 1;
            end = LimitToCodePoints(text, position, end, MaxSegmentCodePoints);
            yield return text[position..end];
            position = end;
        }
    }

    private static int LimitToCodePoints(string text, int start, int end, int maxCodePoints)
    {
        if (end - start <= maxCodePoints)
            return end;
        int i = start;
        for (int count = 0; count < maxCodePoints && i < end; count++)
            i += CodePoints.WidthAt(text, i);
        return i;
    }
}
