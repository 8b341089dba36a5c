using System.Text;
using System.Text.Json;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using TorchSharp;
using Xunit.Sdk;

namespace StableLora.Tests.TextEncoder;

public sealed class ClipTokenizerTests
{
    private const int Bos = 49406;
    private const int Eos = 49407;

    private static readonly Lazy<ClipTokenizer> Fixture =
        new(() => ClipTokenizer.FromDirectory(Path.Combine(FixturePaths.TinyPipeline, "tokenizer")));

    private static ClipTokenizer Tokenizer => Fixture.Value;

    private static string[] Prompts => FixtureCases.Case("tokenizer").GetProperty("inputs").GetProperty("prompts")
        .EnumerateArray().Select(p => p.GetString()!).ToArray();

    [Fact]
    public void LoadsClipSpecialTokensAndLength()
    {
        Assert.Equal(77, Tokenizer.MaxLength);
        Assert.Equal(Bos, Tokenizer.BosTokenId);
        Assert.Equal(Eos, Tokenizer.EosTokenId);
        Assert.Equal(Eos, Tokenizer.PadTokenId);
    }

    [Fact]
    public void EveryFixturePromptEncodesToTheReferenceIdsAndMask()
    {
        long[,] expectedIds = ReadExpected("input_ids");
        long[,] expectedMask = ReadExpected("attention_mask");
        string[] prompts = Prompts;
        Assert.Equal(prompts.Length, expectedIds.GetLength(0));

        var failures = new List<string>();
        for (int row = 0; row < prompts.Length; row++)
        {
            ClipTokenization encoded = Tokenizer.Encode(prompts[row]);
            string? idsDiff = Describe("input_ids", Row(expectedIds, row), encoded.InputIds);
            string? maskDiff = Describe("attention_mask", Row(expectedMask, row), encoded.AttentionMask);
            if (idsDiff is not null || maskDiff is not null)
                failures.Add($"prompt #{row} {Escape(prompts[row])}: {idsDiff} {maskDiff}");
        }

        if (failures.Count > 0)
            throw new XunitException($"{failures.Count} of {prompts.Length} prompts differ from the reference:\n" + string.Join("\n", failures));
    }

    [Fact]
    public void TokenCountsAreTheReferenceUntruncatedCounts()
    {
        int[] expected = FixtureCases.Case("tokenizer").GetProperty("untruncated_token_counts")
            .EnumerateArray().Select(c => c.GetInt32()).ToArray();
        int[] actual = Prompts.Select(p => Tokenizer.Encode(p).TokenCount).ToArray();
        Assert.Equal(expected, actual);
        Assert.Equal(expected, Prompts.Select(p => Tokenizer.Tokenize(p).Count).ToArray());
    }

    [Fact]
    public void LongPromptIsTruncatedToSeventyFiveTokensAndReportsTheDroppedOnes()
    {
        string prompt = Prompts.Single(p => p.StartsWith("a highly detailed matte painting", StringComparison.Ordinal));
        IReadOnlyList<int> all = Tokenizer.Tokenize(prompt);
        ClipTokenization encoded = Tokenizer.Encode(prompt);

        Assert.Equal(79, encoded.TokenCount);
        Assert.True(encoded.Truncated);
        Assert.Equal(4, encoded.DroppedTokenCount);
        Assert.Equal(new long[] { Bos }.Concat(all.Take(75).Select(i => (long)i)).Append(Eos), encoded.InputIds);
        Assert.All(encoded.AttentionMask, m => Assert.Equal(1L, m));
    }

    [Fact]
    public void ShortPromptIsPaddedWithEndOfTextAndMaskedAfterTheEndToken()
    {
        ClipTokenization encoded = Tokenizer.Encode("a photo of a cat");

        Assert.Equal(5, encoded.TokenCount);
        Assert.False(encoded.Truncated);
        Assert.Equal(0, encoded.DroppedTokenCount);
        Assert.Equal(Eos, encoded.InputIds[6]);
        Assert.All(encoded.InputIds.Skip(7), id => Assert.Equal(Eos, id));
        Assert.Equal(Enumerable.Repeat(1L, 7).Concat(Enumerable.Repeat(0L, 70)), encoded.AttentionMask);
    }

    [Fact]
    public void SpecialTokenLiteralsInThePromptBecomeSpecialIdsAndCountAsTokens()
    {
        ClipTokenization encoded = Tokenizer.Encode("<|startoftext|>explicit special tokens<|endoftext|>");

        Assert.Equal(new long[] { Bos, Bos }, encoded.InputIds.Take(2));
        Assert.Equal(new long[] { Eos, Eos, Eos }, encoded.InputIds.Skip(5).Take(3));
        Assert.Equal(5, encoded.TokenCount);
        // The mask covers the literal <|endoftext|> and the added end token, not just up to the first 49407.
        Assert.Equal(Enumerable.Repeat(1L, 7).Concat(Enumerable.Repeat(0L, 70)), encoded.AttentionMask);

        Assert.Equal(new[] { Eos, Bos }, Tokenizer.Tokenize("<|endoftext|><|startoftext|>"));
        Assert.Equal(new[] { Id("a</w>"), Eos, Id("b</w>") }, Tokenizer.Tokenize("a <|endoftext|> b"));
    }

    [Fact]
    public void SpecialTokenLiteralsProducedByCleaningAlsoBecomeSpecialIds()
    {
        // Lower-casing and HTML unescaping happen before the split into words, whose pattern knows the literals.
        Assert.Equal(new[] { Eos }, Tokenizer.Tokenize("<|ENDOFTEXT|>"));
        Assert.Equal(new[] { Eos }, Tokenizer.Tokenize("&lt;|endoftext|&gt;"));
    }

    [Fact]
    public void HtmlEntitiesAreDecodedPerPieceBetweenSpecialTokens()
    {
        // The '<' of a special literal is cut away before ftfy sees the text, so "&amp;" is still decoded ...
        Assert.Equal(new[] { Id("&</w>"), Eos }, Tokenizer.Tokenize("&amp; <|endoftext|>"));
        // ... while a real '<' in the same piece keeps ftfy from decoding entities,
        Assert.Equal(new[] { Id("&</w>") }, Tokenizer.Tokenize("&amp;"));
        Assert.Equal(new[] { Id("&</w>"), Id("amp</w>"), Id(";</w>"), Id("<</w>"), Id("x</w>") }, Tokenizer.Tokenize("&amp; <x"));
        // on the line with the '<' and on every later line.
        Assert.Equal(
            new[] { Id("x</w>"), Id("&</w>"), Id("<</w>"), Id("y</w>"), Id("&</w>"), Id("amp</w>"), Id(";</w>") },
            Tokenizer.Tokenize("x &amp;\n<y &amp;"));
    }

    [Fact]
    public void LowerCasingFollowsPython()
    {
        // Python's str.lower() writes a word-final capital sigma as the final form and U+0130 as "i" + U+0307.
        Assert.Equal(Tokenizer.Tokenize("\u03BA\u03CC\u03C3\u03BC\u03BF\u03C2"), Tokenizer.Tokenize("\u039A\u038C\u03A3\u039C\u039F\u03A3"));
        Assert.NotEqual(Tokenizer.Tokenize("\u03BA\u03CC\u03C3\u03BC\u03BF\u03C3"), Tokenizer.Tokenize("\u039A\u038C\u03A3\u039C\u039F\u03A3"));
        Assert.Equal(Tokenizer.Tokenize("i\u0307stanbul"), Tokenizer.Tokenize("\u0130stanbul"));
    }

    [Fact]
    public void OddCodePointsAreHandledLikeTheReference()
    {
        // A lone surrogate becomes U+FFFD; U+FFFE (which .NET's normalizer rejects) is kept; U+0345 belongs to no word.
        Assert.Equal(new[] { 39802 }, Tokenizer.Tokenize("\uD800"));
        Assert.Equal(Tokenizer.Tokenize("\uFFFD"), Tokenizer.Tokenize("\uD800"));
        Assert.Equal(new[] { Id("a</w>"), 27850, 378, Id("b</w>") }, Tokenizer.Tokenize("a\uFFFEb"));
        Assert.Equal(new[] { Id("a</w>"), Id("b</w>") }, Tokenizer.Tokenize("a\u0345b"));
    }

    [Fact]
    public void EncodeBatchStacksTheIdsOfEveryPrompt()
    {
        string[] prompts = Prompts;
        using torch.Tensor batch = Tokenizer.EncodeBatch(prompts);
        using torch.Tensor expected = ExpectedTensors.Read("tokenizer.safetensors", "input_ids");

        Assert.Equal(torch.int64, batch.dtype);
        Assert.Equal(new long[] { prompts.Length, 77 }, batch.shape);
        TensorAssert.Identical(expected, batch, "input_ids");
    }

    [Fact]
    public void ReadsModelMaxLengthFromTokenizerConfig()
    {
        using var temp = CopyFixtureTokenizer();
        File.WriteAllText(temp.File("tokenizer_config.json"), """{"model_max_length": 16, "pad_token": "<|endoftext|>"}""");

        ClipTokenizer tokenizer = ClipTokenizer.FromDirectory(temp.Path);
        ClipTokenization encoded = tokenizer.Encode(Prompts[^1]);

        Assert.Equal(16, tokenizer.MaxLength);
        Assert.Equal(16, encoded.InputIds.Length);
        Assert.Equal(79 - 14, encoded.DroppedTokenCount);
        Assert.Equal(Eos, encoded.InputIds[15]);
    }

    [Fact]
    public void DefaultsToSeventySevenWithoutTokenizerConfig()
    {
        using var temp = CopyFixtureTokenizer();
        File.Delete(temp.File("tokenizer_config.json"));

        Assert.Equal(77, ClipTokenizer.FromDirectory(temp.Path).MaxLength);
    }

    [Fact]
    public void MissingFilesAreReportedByName()
    {
        using var temp = CopyFixtureTokenizer();
        File.Delete(temp.File("merges.txt"));
        var missingMerges = Assert.Throws<InvalidModelFileException>(() => ClipTokenizer.FromDirectory(temp.Path));
        Assert.Equal(temp.File("merges.txt"), missingMerges.FilePath);
        Assert.Contains("merges.txt", missingMerges.Message, StringComparison.Ordinal);

        var missingVocab = Assert.Throws<InvalidModelFileException>(
            () => ClipTokenizer.FromFiles(temp.File("nope.json"), temp.File("merges.txt")));
        Assert.Equal(temp.File("nope.json"), missingVocab.FilePath);
    }

    [Fact]
    public void InvalidFilesAreReportedByName()
    {
        using var temp = CopyFixtureTokenizer();
        string vocab = temp.File("vocab.json"), merges = temp.File("merges.txt");

        File.WriteAllText(temp.File("broken.json"), "{\"a\": 1,");
        Assert.Equal(temp.File("broken.json"), Assert.Throws<InvalidModelFileException>(
            () => ClipTokenizer.FromFiles(temp.File("broken.json"), merges)).FilePath);

        File.WriteAllText(temp.File("no-specials.json"), """{"a": 0, "a</w>": 1}""");
        var noSpecials = Assert.Throws<InvalidModelFileException>(() => ClipTokenizer.FromFiles(temp.File("no-specials.json"), merges));
        Assert.Equal(temp.File("no-specials.json"), noSpecials.FilePath);
        Assert.Equal("<|startoftext|>", noSpecials.Key);

        File.WriteAllText(temp.File("bad-line.txt"), "#version: 0.2\ni n\nt h e\n");
        var badLine = Assert.Throws<InvalidModelFileException>(() => ClipTokenizer.FromFiles(vocab, temp.File("bad-line.txt")));
        Assert.Equal(temp.File("bad-line.txt"), badLine.FilePath);
        Assert.Equal("line 3", badLine.Key);

        File.WriteAllText(temp.File("unknown.txt"), "#version: 0.2\ni n\n\u4E00 \u4E01\n");
        Assert.Equal(temp.File("unknown.txt"), Assert.Throws<InvalidModelFileException>(
            () => ClipTokenizer.FromFiles(vocab, temp.File("unknown.txt"))).FilePath);

        File.WriteAllText(temp.File("tokenizer_config.json"), """{"model_max_length": 77, "pad_token": "!"}""");
        var padConfig = Assert.Throws<ModelConfigException>(() => ClipTokenizer.FromDirectory(temp.Path));
        Assert.Equal(temp.File("tokenizer_config.json"), padConfig.FilePath);
        Assert.Equal("pad_token", padConfig.Key);

        File.WriteAllText(temp.File("tokenizer_config.json"), """{"model_max_length": "long"}""");
        Assert.Equal("model_max_length", Assert.Throws<ModelConfigException>(() => ClipTokenizer.FromDirectory(temp.Path)).Key);
    }

    private static int Id(string token)
    {
        using var vocab = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FixturePaths.TinyPipeline, "tokenizer", "vocab.json")));
        return vocab.RootElement.GetProperty(token).GetInt32();
    }

    private static TempDirectory CopyFixtureTokenizer()
    {
        var temp = new TempDirectory();
        foreach (string file in Directory.GetFiles(Path.Combine(FixturePaths.TinyPipeline, "tokenizer")))
            File.Copy(file, temp.File(Path.GetFileName(file)));
        return temp;
    }

    private static long[,] ReadExpected(string name)
    {
        using torch.Tensor tensor = ExpectedTensors.Read("tokenizer.safetensors", name);
        long rows = tensor.shape[0], columns = tensor.shape[1];
        long[] flat = tensor.data<long>().ToArray();
        var result = new long[rows, columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                result[r, c] = flat[r * columns + c];
        return result;
    }

    private static long[] Row(long[,] table, int row) =>
        Enumerable.Range(0, table.GetLength(1)).Select(c => table[row, c]).ToArray();

    private static string? Describe(string name, long[] expected, long[] actual)
    {
        if (expected.SequenceEqual(actual))
            return null;
        int first = Enumerable.Range(0, Math.Min(expected.Length, actual.Length)).FirstOrDefault(i => expected[i] != actual[i]);
        return $"{name} differs from position {first}: expected [{string.Join(",", expected.Skip(first).Take(8))}...], " +
            $"got [{string.Join(",", actual.Skip(first).Take(8))}...] (lengths {expected.Length}/{actual.Length})";
    }

    private static string Escape(string text)
    {
        var builder = new StringBuilder("\"");
        foreach (char c in text)
            builder.Append(c is >= ' ' and <= '~' ? c.ToString() : $"\\u{(int)c:X4}");
        return builder.Append('"').ToString();
    }
}
