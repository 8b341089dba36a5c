using Microsoft.ML.Tokenizers;
using StableLora.TextEncoder.Normalization;

namespace StableLora.TextEncoder;

/// <summary>
/// Splits normalized prompt text into the words that BPE then encodes one by one, like the reference's
/// <c>regex.findall</c> with the case-insensitive pattern
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>:
/// the special-token literals, the English contractions, runs of letters, single numeric characters (each digit is a
/// word), and runs of everything else except whitespace. Plugged into <see cref="BpeTokenizer"/> as its pre-tokenizer.
/// </summary>
/// <remarks>
/// A <see cref="RegexPreTokenizer"/> with that pattern would not match the reference: .NET regexes see UTF-16 units, so
/// a letter outside the BMP (e.g. U+1D41B) is not <c>\p{L}</c>, and the reference's case-insensitive matching treats
/// U+017F and U+0345 specially (see below). The classes here are evaluated on whole code points instead.
/// </remarks>
internal sealed class ClipPreTokenizer : PreTokenizer
{
    private static readonly string[] Literals =
        ["<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    // U+0345 (combining ypogegrammeni) case-folds to a Greek iota, so under the reference's case-insensitive matching it
    // falls outside the "not a letter" class while not being a letter itself: it belongs to no word and is dropped.
    private const int CaseFoldsToLetterOnly = 0x345;

    public static ClipPreTokenizer Instance { get; } = new();

    private ClipPreTokenizer()
    {
    }

    /// <summary>The words of <paramref name="text"/> as strings (for inspection; encoding uses the offsets).</summary>
    public static IEnumerable<string> Words(string text) =>
        Instance.PreTokenize(text).Select(word => text.Substring(word.Offset, word.Length));

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        var words = new List<(int, int)>();
        int i = 0;
        while (i < text.Length)
        {
            int end = MatchLiteral(text, i);
            if (end < 0)
                end = MatchRun(text, i);
            if (end < 0)
            {
                i += CodePoints.WidthAt(text, i);
                continue;
            }

            words.Add((i, end - i));
            i = end;
        }

        return words;
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => PreTokenize(text.ToString());

    private static int MatchLiteral(string text, int start)
    {
        foreach (string literal in Literals)
        {
            if (start + literal.Length > text.Length)
                continue;
            bool matches = true;
            for (int k = 0; k < literal.Length && matches; k++)
                matches = EqualIgnoringCase(text[start + k], literal[k]);
            if (matches)
                return start + literal.Length;
        }

        return -1;
    }

    // The reference matches case-insensitively with simple case folding; among the letters of the literals only 's'
    // has a non-ASCII equivalent (U+017F LATIN SMALL LETTER LONG S).
    private static bool EqualIgnoringCase(char actual, char literal) =>
        actual == literal || (char.IsAsciiLetter(literal) && char.ToUpperInvariant(literal) == actual) || (literal == 's' && actual == '\u017F');

    private static int MatchRun(string text, int start)
    {
        CharacterKind kind = KindOf(CodePoints.At(text, start));
        if (kind is CharacterKind.None)
            return -1;
        int end = start + CodePoints.WidthAt(text, start);
        if (kind is CharacterKind.Number)
            return end;
        while (end < text.Length && KindOf(CodePoints.At(text, end)) == kind)
            end += CodePoints.WidthAt(text, end);
        return end;
    }

    private static CharacterKind KindOf(int codePoint)
    {
        if (PythonText.IsLetter(codePoint))
            return CharacterKind.Letter;
        if (PythonText.IsNumber(codePoint))
            return CharacterKind.Number;
        if (PythonText.IsWhiteSpaceProperty(codePoint) || codePoint == CaseFoldsToLetterOnly)
            return CharacterKind.None;
        return CharacterKind.Other;
    }

    private enum CharacterKind
    {
        None,
        Letter,
        Number,
        Other,
    }
}
