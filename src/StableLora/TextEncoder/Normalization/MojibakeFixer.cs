using System.Text.RegularExpressions;
using static StableLora.TextEncoder.Normalization.MojibakeCharacters;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// Repairs mojibake: text whose UTF-8 bytes were decoded in a single-byte character set (ftfy 6.1.1's
/// <c>fix_encoding</c>). Text is only changed when <see cref="MojibakeHeuristic"/> finds it suspicious and the
/// re-encoded bytes are valid UTF-8, so ordinary accented text ("café", "Ørsted") is left alone.
/// </summary>
internal static class MojibakeFixer
{
    // Runs of what looks like misdecoded UTF-8 sequences, not preceded by a further misdecoded continuation byte (so
    // that a few characters in the middle of a bigger garble are not "fixed" on their own).
    private static readonly Regex EmbeddedUtf8 = new(
        $"(?<!{Utf8ContinuationStrict.ToRegexClass()})"
        + $"(?:{Utf8FirstOfTwo.ToRegexClass()}{Utf8Continuation.ToRegexClass()}"
        + $"|{Utf8FirstOfThree.ToRegexClass()}{Utf8Continuation.ToRegexClass()}{{2}}"
        + $"|{Utf8FirstOfFour.ToRegexClass()}{Utf8Continuation.ToRegexClass()}{{3}})+",
        RegexOptions.CultureInvariant);

    public static string FixEncoding(string text)
    {
        while (true)
        {
            string fixedText = FixOneStep(text);
            if (fixedText == text)
                return text;
            text = fixedText;
        }
    }

    private static string FixOneStep(string text)
    {
        if (text.All(char.IsAscii) || !MojibakeHeuristic.IsBad(text))
            return text;

        bool latin1Possible = false;
        foreach (SingleByteCodec codec in SingleByteCodec.MojibakeCandidates)
        {
            if (!codec.CanEncode(text))
                continue;
            latin1Possible |= codec == SingleByteCodec.Latin1;
            string? decoded = TryDecodeAsUtf8(codec, text);
            if (decoded is not null)
                return decoded;
        }

        if (EmbeddedUtf8.IsMatch(text))
        {
            string fixedText = FixEmbeddedUtf8(text);
            if (fixedText != text)
                return fixedText;
        }

        // Latin-1 text with C1 controls in it was almost surely meant as Windows-1252, if it decodes as such.
        // (The reference skips this when the text is also plain Windows-1252, which its candidate list never holds.)
        if (latin1Possible && !text.Any(IsUndefinedInWindows1252))
        {
            string fixedText = CharacterFixes.FixC1Controls(text);
            if (fixedText != text)
                return fixedText;
        }

        return CharacterFixes.HasC1Controls(text) ? CharacterFixes.FixC1Controls(text) : text;
    }

    private static string? TryDecodeAsUtf8(SingleByteCodec codec, string text)
    {
        byte[] bytes = codec.Encode(text);
        if (ByteLevelRepairs.HasSpaceForNoBreakSpace(bytes))
            bytes = ByteLevelRepairs.RestoreNoBreakSpaces(bytes);
        if (codec.IsSloppy)
            bytes = ByteLevelRepairs.ReplaceLossySequences(bytes);
        return Utf8VariantsDecoder.TryDecode(bytes);
    }

    // Text that mixes mojibake with correctly decoded text: fix each suspicious run on its own.
    private static string FixEmbeddedUtf8(string text) => EmbeddedUtf8.Replace(text, match =>
        match.Length < text.Length && MojibakeHeuristic.IsBad(match.Value) ? FixEncoding(match.Value) : match.Value);

    private static bool IsUndefinedInWindows1252(char c) => c is '\u0081' or '\u008D' or '\u008F' or '\u0090' or '\u009D';
}
