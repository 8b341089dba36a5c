using System.Globalization;
using System.Text;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// Character classes and case mapping as CPython 3.11 and its <c>re</c> / <c>regex</c> modules define them, built on
/// .NET's Unicode data (the two agree for every character assigned in Unicode 14, which Python 3.11 uses).
/// </summary>
internal static class PythonText
{
    // Cased = Lu, Ll, Lt plus these Other_Lowercase / Other_Uppercase characters (Unicode 14 DerivedCoreProperties).
    private static readonly CodePointSet OtherCased = CodePointSet.Parse(
        "\u00AA\u00BA\u02B0-\u02B8\u02C0-\u02C1\u02E0-\u02E4\u0345\u037A\u1D2C-\u1D6A\u1D78\u1D9B-\u1DBF\u2071\u207F" +
        "\u2090-\u209C\u2160-\u217F\u24B6-\u24E9\u2C7C-\u2C7D\uA69C-\uA69D\uA770\uA7F8-\uA7F9\uAB5C-\uAB5F");

    private static readonly (int First, int Last)[] OtherCasedAstral =
    [
        (0x10780, 0x10780), (0x10783, 0x10785), (0x10787, 0x107B0), (0x107B2, 0x107BA),
        (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189),
    ];

    // Case_Ignorable = Mn, Me, Cf, Lm, Sk plus the Word_Break MidLetter / MidNumLet / Single_Quote characters.
    private static readonly CodePointSet WordBreakCaseIgnorable = CodePointSet.Parse(
        "\u0027\u002E\u003A\u00B7\u0387\u055F\u05F4\u2018\u2019\u2024\u2027\uFE13\uFE52\uFE55\uFF07\uFF0E\uFF1A");

    public static UnicodeCategory Category(int codePoint) =>
        codePoint is >= 0xD800 and <= 0xDFFF ? UnicodeCategory.Surrogate : CharUnicodeInfo.GetUnicodeCategory(codePoint);

    /// <summary><c>str.isspace()</c>, which is also what <c>\s</c> means in Python's <c>re</c> module.</summary>
    public static bool IsSpace(int codePoint) =>
        codePoint is >= 0x09 and <= 0x0D or >= 0x1C and <= 0x20 or 0x85 or 0xA0 or 0x1680 or >= 0x2000 and <= 0x200A
            or 0x2028 or 0x2029 or 0x202F or 0x205F or 0x3000;

    /// <summary><c>\s</c> in the <c>regex</c> module (the Unicode White_Space property): <see cref="IsSpace"/> without U+1C..U+1F.</summary>
    public static bool IsWhiteSpaceProperty(int codePoint) => IsSpace(codePoint) && codePoint is < 0x1C or > 0x1F;

    /// <summary><c>\w</c> in Python's <c>re</c> module: letters, numbers and '_'.</summary>
    public static bool IsWordCharacter(int codePoint) => codePoint == '_' || IsLetter(codePoint) || IsNumber(codePoint);

    /// <summary><c>\d</c> in Python's <c>re</c> module.</summary>
    public static bool IsDecimalDigit(int codePoint) => Category(codePoint) == UnicodeCategory.DecimalDigitNumber;

    public static bool IsLetter(int codePoint) => Category(codePoint) is UnicodeCategory.UppercaseLetter
        or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter
        or UnicodeCategory.OtherLetter;

    public static bool IsNumber(int codePoint) => Category(codePoint) is UnicodeCategory.DecimalDigitNumber
        or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    /// <summary>
    /// <c>str.lower()</c>: the simple lower-case mapping, except U+0130 (which becomes "i" + U+0307) and a capital
    /// sigma that ends a word (which becomes the final form U+03C2).
    /// </summary>
    public static string ToLower(string text)
    {
        int[] codePoints = CodePoints.Of(text);
        var builder = new StringBuilder(text.Length);
        for (int i = 0; i < codePoints.Length; i++)
        {
            int codePoint = codePoints[i];
            if (codePoint == 0x130)
                builder.Append("i\u0307");
            else if (codePoint == 0x3A3)
                builder.Append(IsFinalSigma(codePoints, i) ? '\u03C2' : '\u03C3');
            else if (codePoint is >= 0xD800 and <= 0xDFFF)
                builder.Append((char)codePoint);
            else
                CodePoints.Append(builder, Rune.ToLowerInvariant(new Rune(codePoint)).Value);
        }

        return builder.ToString();
    }

    // Unicode's Final_Sigma condition: a cased letter before (skipping case-ignorables) and none after.
    private static bool IsFinalSigma(int[] codePoints, int index)
    {
        int before = index - 1;
        while (before >= 0 && IsCaseIgnorable(codePoints[before]))
            before--;
        if (before < 0 || !IsCased(codePoints[before]))
            return false;
        int after = index + 1;
        while (after < codePoints.Length && IsCaseIgnorable(codePoints[after]))
            after++;
        return after == codePoints.Length || !IsCased(codePoints[after]);
    }

    private static bool IsCased(int codePoint) =>
        Category(codePoint) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
            or UnicodeCategory.TitlecaseLetter
        || OtherCased.Contains(codePoint)
        || OtherCasedAstral.Any(r => codePoint >= r.First && codePoint <= r.Last);

    private static bool IsCaseIgnorable(int codePoint) =>
        Category(codePoint) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.Format or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol
        || WordBreakCaseIgnorable.Contains(codePoint);
}
