using System.Text;
using System.Text.RegularExpressions;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// Repairs applied to the bytes of re-encoded mojibake before they are decoded as UTF-8. The patterns work on bytes;
/// here each byte is held as the char with the same value (Latin-1), which .NET's regex engine matches exactly as
/// Python's does bytes.
/// </summary>
internal static class ByteLevelRepairs
{
    private const RegexOptions Options = RegexOptions.CultureInvariant;

    // UTF-8 sequences that would be valid if a 0xA0 byte had not been turned into an ASCII space by the program that
    // made the mojibake. Only lead bytes whose 0xA0-continuation gives a likely character are accepted.
    private static readonly Regex SpaceForNoBreakSpace = new(
        @"[\xC2\xC3\xC5\xCE\xD0\xD9][ ]"
        + @"|[\xE2\xE3][ ][\x80-\x84\x86-\x9F\xA1-\xBF]"
        + @"|[\xE0-\xE3][\x80-\x84\x86-\x9F\xA1-\xBF][ ]"
        + @"|[\xF0][ ][\x80-\xBF][\x80-\xBF]"
        + @"|[\xF0][\x80-\xBF][ ][\x80-\xBF]"
        + @"|[\xF0][\x80-\xBF][\x80-\xBF][ ]",
        Options);

    // "Ã " standing alone is usually the word "à" whose 0xA0 became a space; keep the space after it (except before
    // the Portuguese contractions "às", "àquele", ... where the space is the lost byte itself).
    private static readonly Regex AGraveWord = new(@"\xC3 (?! |quele|quela|quilo|s )", Options);

    // UTF-8 sequences in which some bytes were lost (to U+FFFD, encoded here as 0x1A, or to '?').
    private static readonly Regex LossySequence = new(
        @"[\xC2-\xDF][\x1A]"
        + @"|[\xC2-\xC3][?]"
        + @"|\xED[\xA0-\xAF][\x1A?]\xED[\xB0-\xBF][\x1A?\x80-\xBF]"
        + @"|\xED[\xA0-\xAF][\x1A?\x80-\xBF]\xED[\xB0-\xBF][\x1A?]"
        + @"|[\xE0-\xEF][\x1A?][\x1A\x80-\xBF]"
        + @"|[\xE0-\xEF][\x1A\x80-\xBF][\x1A?]"
        + @"|[\xF0-\xF4][\x1A?][\x1A\x80-\xBF][\x1A\x80-\xBF]"
        + @"|[\xF0-\xF4][\x1A\x80-\xBF][\x1A?][\x1A\x80-\xBF]"
        + @"|[\xF0-\xF4][\x1A\x80-\xBF][\x1A\x80-\xBF][\x1A?]"
        + @"|\x1A",
        Options);

    public static bool HasSpaceForNoBreakSpace(byte[] bytes) => SpaceForNoBreakSpace.IsMatch(AsChars(bytes));

    public static byte[] RestoreNoBreakSpaces(byte[] bytes)
    {
        string text = AGraveWord.Replace(AsChars(bytes), "\u00C3\u00A0 ");
        text = SpaceForNoBreakSpace.Replace(text, match => match.Value.Replace(' ', '\u00A0'));
        return AsBytes(text);
    }

    public static byte[] ReplaceLossySequences(byte[] bytes) =>
        AsBytes(LossySequence.Replace(AsChars(bytes), "\u00EF\u00BF\u00BD"));

    private static string AsChars(byte[] bytes) => Encoding.Latin1.GetString(bytes);

    private static byte[] AsBytes(string chars) => Encoding.Latin1.GetBytes(chars);
}
