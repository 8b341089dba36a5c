namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// The roughly 400 characters that UTF-8 mojibake (UTF-8 bytes read in one of the single-byte character sets) is made
/// of, grouped by how suspicious they are, plus the characters that the single bytes of a UTF-8 sequence turn into.
/// These are the groups of ftfy 6.1.1's heuristic; a different grouping changes which text is repaired.
/// </summary>
internal static class MojibakeCharacters
{
    /// <summary>Characters found in many contexts; sequences containing them are not mojibake by themselves.</summary>
    public static readonly CodePointSet Common = CodePointSet.Parse("\u00A0\u00AD\u00B7\u00B4\u2013\u2014\u2015\u2026\u2019");

    public static readonly CodePointSet C1Controls = CodePointSet.Parse("\u0080-\u009F");

    /// <summary>Characters that almost only occur in mojibake.</summary>
    public static readonly CodePointSet Bad = CodePointSet.Parse(
        "\u00A6\u00A4\u00A8\u00AC\u00AF\u00B6\u00A7\u00B8\u0192\u02C6\u02C7\u02D8\u02DB\u02DC\u2020\u2021\u2030" +
        "\u2310\u25CA\uFFFD\u00AA\u00BA");

    public static readonly CodePointSet Currency = CodePointSet.Parse("\u00A2\u00A3\u00A5\u20A7\u20AC");

    public static readonly CodePointSet StartPunctuation = CodePointSet.Parse(
        "\u00A1\u00AB\u00BF\u00A9\u0384\u0385\u2018\u201A\u201C\u201E\u2022\u2039\uF8FF");

    public static readonly CodePointSet EndPunctuation = CodePointSet.Parse("\u00AE\u00BB\u02DD\u201D\u203A\u2122");

    public static readonly CodePointSet Numeric = CodePointSet.Parse(
        "\u00B2\u00B3\u00B9\u00B1\u00BC\u00BD\u00BE\u00D7\u00B5\u00F7\u2044\u2202\u2206\u220F\u2211\u221A\u221E" +
        "\u2229\u222B\u2248\u2260\u2261\u2264\u2265\u2116");

    /// <summary>Letters used in emoticons (kaomoji), which may legitimately sit in odd-looking contexts.</summary>
    public static readonly CodePointSet Kaomoji = CodePointSet.Parse(
        "\u00D2-\u00D6\u00D9-\u00DC\u00F2-\u00F6\u00F8-\u00FC\u0150\u00B0");

    public static readonly CodePointSet UpperAccented = CodePointSet.Parse(
        "\u00C0-\u00D1\u00D8\u00DC\u00DD\u0102\u0104\u0106\u010C\u010E\u0110\u0118\u011A\u011E\u0130\u0139\u013D" +
        "\u0141\u0143\u0147\u0152\u0158\u015A\u015E\u0160\u0162\u0164\u016E\u0170\u0178\u0179\u017B\u017D\u0490");

    public static readonly CodePointSet LowerAccented = CodePointSet.Parse(
        "\u00DF\u00E0-\u00F1\u0103\u0105\u0107\u010D\u010F\u0111\u0119\u011B\u011F\u013A\u013E\u0142\u0153\u0155" +
        "\u015B\u015F\u0161\u0165\u00FC\u017A\u017C\u017E\u0491\uFB01\uFB02");

    public static readonly CodePointSet UpperCommon = CodePointSet.Parse(
        "\u00DE\u0391-\u03A9\u0386\u0388\u0389\u038A\u038C\u038E\u038F\u03AA\u03AB\u0401-\u042F");

    public static readonly CodePointSet LowerCommon = CodePointSet.Parse(
        "\u03B1-\u03C9\u03AC\u03AD\u03AE\u03AF\u03B0\u0430-\u045F");

    public static readonly CodePointSet Box = CodePointSet.Parse(
        "\u2502\u250C\u2510\u2518\u251C\u2524\u252C\u253C\u2550-\u256C\u2580\u2584\u2588\u258C\u2590\u2591\u2592\u2593");

    /// <summary>What lead bytes 0xC2-0xDF of a two-byte UTF-8 sequence look like once misdecoded.</summary>
    public static readonly CodePointSet Utf8FirstOfTwo = CodePointSet.Parse(
        "\u00C2-\u00DF\u0102\u0106\u010C\u010E\u0110\u0118\u011A\u011E\u0130\u0139\u0143\u0147\u0150\u0158\u015E" +
        "\u0162\u016E\u0170\u0392-\u03A1\u03A3-\u03AF\u0412-\u042F");

    /// <summary>What lead bytes 0xE0-0xEF of a three-byte UTF-8 sequence look like once misdecoded.</summary>
    public static readonly CodePointSet Utf8FirstOfThree = CodePointSet.Parse(
        "\u00E0-\u00EF\u0103\u0107\u010D\u010F\u0119\u011B\u013A\u0155\u03B0-\u03BF\u0430-\u043F");

    /// <summary>What lead bytes 0xF0 / 0xF3 of a four-byte UTF-8 sequence look like once misdecoded.</summary>
    public static readonly CodePointSet Utf8FirstOfFour = CodePointSet.Parse("\u00F0\u00F3\u0111\u011F\u03C0\u03C3\u0440\u0443");

    /// <summary>What continuation bytes 0x80-0xBF look like once misdecoded, excluding the ones (spaces, dashes,
    /// quotation marks, ellipses) that commonly stand for themselves next to mojibake.</summary>
    public static readonly CodePointSet Utf8ContinuationStrict = CodePointSet.Parse(
        "\u0080-\u00BF\u0104\u0105\u013D\u013E\u0141\u0142\u0152\u0153\u015A\u015B\u015E\u015F\u0160\u0161\u0164" +
        "\u0165\u0178\u0179\u017A\u017B\u017C\u017D\u017E\u0192\u02C6\u02C7\u02D8\u02DB\u02DC\u02DD\u0384\u0385" +
        "\u0386\u0388\u0389\u038A\u038C\u038E\u038F\u0401-\u040C\u040E\u040F\u0451-\u045C\u045E\u045F\u0490\u0491" +
        "\u2020\u2021\u2022\u2030\u2039\u203A\u20AC\u2116\u2122");

    /// <summary>All misdecoded continuation bytes, with a space allowed for a lost 0xA0.</summary>
    public static readonly CodePointSet Utf8Continuation = Utf8ContinuationStrict
        | CodePointSet.Parse("\u2013\u2014\u2015\u2018\u2019\u201A\u201C\u201D\u201E\u2026\u0020");
}
