using static StableLora.TextEncoder.Normalization.MojibakeCharacters;

namespace StableLora.TextEncoder.Normalization;

/// <summary>
/// Decides whether text looks like it contains mojibake: true when any of a list of short character sequences that
/// are far likelier in mojibake than in real text occurs anywhere (ftfy 6.1.1's <c>is_bad</c>). Each sequence is a
/// row of character classes; the matching is done on code points, as Python does.
/// </summary>
internal static class MojibakeHeuristic
{
    private static readonly CodePointSet AsciiLetters = CodePointSet.Parse("a-zA-Z");
    private static readonly CodePointSet LowerAsciiLetters = CodePointSet.Parse("a-z");

    private static readonly Step[][] Sequences = BuildSequences();

    public static bool IsBad(string text)
    {
        int[] codePoints = CodePoints.Of(text);
        for (int start = 0; start < codePoints.Length; start++)
        {
            foreach (Step[] sequence in Sequences)
            {
                if (MatchesAt(sequence, 0, codePoints, start))
                    return true;
            }
        }

        return false;
    }

    private static bool MatchesAt(Step[] sequence, int stepIndex, int[] codePoints, int position)
    {
        if (stepIndex == sequence.Length)
            return true;
        Step step = sequence[stepIndex];
        if (step.Kind == StepKind.StartOfText)
            return position == 0 && MatchesAt(sequence, stepIndex + 1, codePoints, position);
        bool matchesHere = position < codePoints.Length && step.Accepts(codePoints[position]);
        if (matchesHere && MatchesAt(sequence, stepIndex + 1, codePoints, position + 1))
            return true;
        return step.Kind == StepKind.Optional && MatchesAt(sequence, stepIndex + 1, codePoints, position);
    }

    private static Step[][] BuildSequences()
    {
        var punctuationAndSymbols = Box | StartPunctuation | EndPunctuation | Currency | Numeric;
        var arabicFollower = Common | Currency | Bad | Numeric | StartPunctuation | CodePointSet.Parse("\u0178\u0160\u00AE\u00B0\u00B5\u00BB");
        var arabicLead = CodePointSet.Parse("\u00D8\u00D9");
        var cyrillicFrame = CodePointSet.Parse("\u0412\u0413\u0420\u0421");
        var greekFrame = CodePointSet.Parse("\u0392\u0393\u039E\u039F");
        var aHatOrATilde = CodePointSet.Parse("\u00C3\u00C2");
        var space = CodePointSet.Parse(" ");
        var anyButNewline = new Step(StepKind.One, c => c != '\n');

        return
        [
            [One(C1Controls)],
            [One(Bad | LowerAccented | UpperAccented | punctuationAndSymbols), One(Bad)],
            [One(AsciiLetters), One(LowerCommon | UpperCommon), One(Bad)],
            [One(Bad), One(LowerAccented | UpperAccented | punctuationAndSymbols)],
            [One(LowerAccented | LowerCommon | Box | EndPunctuation | Currency | Numeric), One(UpperAccented)],
            [One(Box | EndPunctuation | Currency | Numeric), One(LowerAccented)],
            [One(LowerAccented | Box | EndPunctuation), One(Currency)],
            [One(PythonText.IsSpace), One(UpperAccented), One(Currency)],
            [One(UpperAccented | Box), One(Numeric)],
            [One(LowerAccented | UpperAccented | Box | Currency | EndPunctuation), One(StartPunctuation), One(Numeric)],
            [One(LowerAccented | UpperAccented | Currency | Numeric | Box), One(EndPunctuation), One(StartPunctuation)],
            [One(Currency | Numeric | Box), One(StartPunctuation)],
            [One(LowerAsciiLetters), One(UpperAccented), One(StartPunctuation | Currency)],
            [One(Box), One(Kaomoji)],
            [One(LowerAccented | UpperAccented | Currency | Numeric | StartPunctuation | EndPunctuation), One(Box)],
            [One(Box), One(EndPunctuation)],
            [One(LowerAccented | UpperAccented), One(EndPunctuation), One(PythonText.IsWordCharacter)],
            // the ligature œ when not followed by an unaccented Latin letter
            [One(CodePointSet.Parse("\u0152\u0153")), One(c => !AsciiLetters.Contains(c))],
            // common Windows-1252 two-character mojibake not covered above
            [
                One(CodePointSet.Parse("\u00C2\u00C3\u00CE\u00D0")),
                One(StartPunctuation | EndPunctuation
                    | CodePointSet.Parse("\u20AC\u0160\u0161\u00A2\u00A3\u0178\u017E\u00A0\u00AD\u00AE\u00A9\u00B0\u00B7\u00BB\u2013\u2014\u00B4")),
            ],
            [One(CodePointSet.Parse("\u00D7")), One(CodePointSet.Parse("\u00B2\u00B3"))],
            // Windows-1252 mojibake of Arabic: two lead/follower pairs in a row
            [One(arabicLead), One(arabicFollower), One(arabicLead), One(arabicFollower)],
            // starts of three-character sequences of South Asian scripts
            [One(CodePointSet.Parse("\u00E0")), One(CodePointSet.Parse("\u00B2\u00B5\u00B9\u00BC\u00BD\u00BE"))],
            // MacRoman mojibake not covered above
            [One(CodePointSet.Parse("\u221A")), One(CodePointSet.Parse("\u00B1\u2202\u2020\u2260\u00AE\u2122\u00B4\u2264\u2265\u00A5\u00B5\u00F8"))],
            [One(CodePointSet.Parse("\u2248")), One(CodePointSet.Parse("\u00B0\u00A2"))],
            [One(CodePointSet.Parse("\u201A")), One(CodePointSet.Parse("\u00C4")), One(CodePointSet.Parse("\u00EC\u00EE\u00EF\u00F2\u00F4\u00FA\u00F9\u00FB\u2020\u00B0\u00A2\u03C0"))],
            [One(CodePointSet.Parse("\u201A")), One(CodePointSet.Parse("\u00E2\u00F3")), One(CodePointSet.Parse("\u00E0\u00E4\u00B0\u00EA"))],
            // Windows-1251 mojibake of the U+2000 block, of Latin-1 and of Cyrillic
            [One(CodePointSet.Parse("\u0432")), One(CodePointSet.Parse("\u0402"))],
            [One(cyrillicFrame), One(C1Controls | Bad | StartPunctuation | EndPunctuation | Currency | CodePointSet.Parse("\u00B0\u00B5")), One(cyrillicFrame)],
            [
                One(CodePointSet.Parse("\u0413")), One(CodePointSet.Parse("\u045E")), One(CodePointSet.Parse("\u0412")),
                One(CodePointSet.Parse("\u0402")), One(CodePointSet.Parse("\u0412")), anyButNewline, One(CodePointSet.Parse("A-Za-z ")),
            ],
            // Windows-1252 forms of 'à', 'á' and U+00A0 itself
            [One(CodePointSet.Parse("\u00C3")), One(CodePointSet.Parse("\u00A0\u00A1"))],
            [One(LowerAsciiLetters), Optional(PythonText.IsSpace), One(aHatOrATilde), One(space)],
            [StartOfText, One(aHatOrATilde), One(space)],
            // Â before a character that it is the mojibake of
            [
                One(CodePointSet.Parse("a-z.,?!") | EndPunctuation), One(CodePointSet.Parse("\u00C2")),
                One(space | StartPunctuation | EndPunctuation),
            ],
            // Windows-1253 mojibake of the U+2000 block, of Latin-1 and of Greek
            [One(CodePointSet.Parse("\u03B2")), One(CodePointSet.Parse("\u20AC")), One(CodePointSet.Parse("\u2122\u00A0\u0386\u00AD\u00AE\u00B0"))],
            [One(greekFrame), One(C1Controls | Bad | StartPunctuation | EndPunctuation | Currency | CodePointSet.Parse("\u00B0")), One(greekFrame)],
        ];
    }

    private static Step One(CodePointSet set) => new(StepKind.One, set.Contains);

    private static Step One(Func<int, bool> accepts) => new(StepKind.One, accepts);

    private static Step Optional(Func<int, bool> accepts) => new(StepKind.Optional, accepts);

    private static Step StartOfText => new(StepKind.StartOfText, _ => false);

    private enum StepKind
    {
        One,
        Optional,
        StartOfText,
    }

    private readonly record struct Step(StepKind Kind, Func<int, bool> Accepts);
}
