using System.Text;
using System.Text.Json;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using StableLora.TextEncoder.Normalization;
using Xunit.Sdk;

namespace StableLora.Tests.TextEncoder;

/// <summary>
/// Stage-by-stage comparison with <c>Fixtures/clip-text/cases.json</c>: about 1900 inputs (many scripts, their mojibake
/// in every character set ftfy repairs, HTML references, control characters, random strings of mojibake characters)
/// with what ftfy 6.1.1 and the regex module made of them (see tools/generate_clip_text_cases.py).
/// </summary>
public sealed class ClipTokenizerTextCasesTests
{
    private static readonly Lazy<Case[]> Cases = new(LoadCases);

    [Fact]
    public void MojibakeHeuristicAgreesWithFtfy() =>
        AssertAll("is_bad", c => c.IsBad.ToString(), c => MojibakeHeuristic.IsBad(c.Input).ToString());

    [Fact]
    public void FixTextAgreesWithFtfy() =>
        AssertAll("fix_text", c => c.Fixed, c => TextFixer.FixText(c.Input));

    [Fact]
    public void NormalizationAgreesWithTheReference() =>
        AssertAll("normalized", c => c.Normalized, c => ClipTextNormalizer.Instance.Normalize(c.Input));

    [Fact]
    public void WordSplitAgreesWithTheReferencePattern() =>
        AssertAll("words", c => string.Join(" | ", c.Words), c => string.Join(" | ", ClipPreTokenizer.Words(c.Normalized)));

    [Fact]
    public void TokenIdsAgreeWithTheReference()
    {
        var tokenizer = ClipTokenizer.FromDirectory(Path.Combine(FixturePaths.TinyPipeline, "tokenizer"));
        AssertAll("ids", c => string.Join(",", c.Ids), c => string.Join(",", tokenizer.Tokenize(c.Input)));
    }

    [Fact]
    public void CasesExerciseTheInterestingPaths()
    {
        Case[] cases = Cases.Value;
        Assert.True(cases.Length > 1500);
        Assert.True(cases.Count(c => c.IsBad) > 500);
        Assert.True(cases.Count(c => c.Fixed != c.Input) > 500);
    }

    private static void AssertAll(string stage, Func<Case, string> expected, Func<Case, string> actual)
    {
        var failures = new List<string>();
        Case[] cases = Cases.Value;
        foreach (Case c in cases)
        {
            string want = expected(c), got = actual(c);
            if (want != got)
                failures.Add($"{Escape(c.Input)}: expected {Escape(want)}, got {Escape(got)}");
        }

        if (failures.Count > 0)
            throw new XunitException($"{stage}: {failures.Count} of {cases.Length} cases differ, e.g.\n" + string.Join("\n", failures.Take(25)));
    }

    private static Case[] LoadCases()
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FixturePaths.Root, "clip-text", "cases.json")));
        return document.RootElement.GetProperty("cases").EnumerateArray().Select(c => new Case(
            c.GetProperty("input").GetString()!,
            c.GetProperty("fixed").GetString()!,
            c.GetProperty("is_bad").GetBoolean(),
            c.GetProperty("normalized").GetString()!,
            c.GetProperty("words").EnumerateArray().Select(w => w.GetString()!).ToArray(),
            c.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray())).ToArray();
    }

    private static string Escape(string text)
    {
        var builder = new StringBuilder("\"");
        foreach (char c in text)
            builder.Append(c is >= ' ' and <= '~' ? c.ToString() : $"\\u{(int)c:X4}");
        return builder.Append('"').ToString();
    }

    private sealed record Case(string Input, string Fixed, bool IsBad, string Normalized, string[] Words, int[] Ids);
}
