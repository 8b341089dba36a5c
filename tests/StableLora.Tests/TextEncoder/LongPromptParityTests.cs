using System.Text.Json;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using static TorchSharp.torch;

namespace StableLora.Tests.TextEncoder;

/// <summary>
/// Long prompts and CLIP skip against transformers' CLIPTextModel on the tiny-sd text encoder
/// (Fixtures/long-prompts, made by tools/generate_long_prompt_fixtures.py): sd-scripts' max_token_length 75/150/225
/// training encoding and AUTOMATIC1111's chunked generation encoding, for clip skip 1, 2 (and 3). The tolerance is the
/// existing text-encoder parity case's.
/// </summary>
public sealed class LongPromptParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly string Folder = Path.Combine(FixturePaths.Root, "long-prompts");
    private static readonly Lazy<JsonDocument> Cases = new(() => JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "cases.json"))));

    private static Tensor Read(string name)
    {
        using var reader = SafetensorsReader.Open(Path.Combine(Folder, "long_prompts.safetensors"));
        return reader.Read(name);
    }

    private static ClipTokenizer Tokenizer() => ClipTokenizer.FromDirectory(Path.Combine(FixturePaths.TinyPipeline, "tokenizer"));

    private static Tolerance Tolerance => FixtureCases.Tolerance("text_encoder");

    public static TheoryData<string> KohyaKeys()
    {
        var data = new TheoryData<string>();
        foreach (var c in Cases.Value.RootElement.GetProperty("cases").GetProperty("kohya").EnumerateArray())
            data.Add(c.GetProperty("key").GetString()!);
        return data;
    }

    public static TheoryData<string> A1111Keys()
    {
        var data = new TheoryData<string>();
        foreach (var c in Cases.Value.RootElement.GetProperty("cases").GetProperty("a1111").EnumerateArray())
            data.Add(c.GetProperty("key").GetString()!);
        return data;
    }

    private static JsonElement Case(string group, string key) =>
        Cases.Value.RootElement.GetProperty("cases").GetProperty(group).EnumerateArray().First(c => c.GetProperty("key").GetString() == key);

    [Theory]
    [MemberData(nameof(KohyaKeys))]
    public void KohyaTrainingEncodingMatchesTransformers(string key)
    {
        using var scope = NewDisposeScope();
        var spec = Case("kohya", key);
        string caption = Cases.Value.RootElement.GetProperty("captions").GetProperty(spec.GetProperty("caption").GetString()!).GetString()!;
        int length = spec.GetProperty("max_token_length").GetInt32();
        var tokenizer = Tokenizer();

        var ids = PromptChunks.KohyaIds(tokenizer, caption, length);
        Assert.Equal(Read(key + "_ids").reshape(-1).data<long>().ToArray(), ids);

        using var model = TextEncoderParityTests.LoadFixtureTextEncoder();
        using var noGrad = no_grad();
        foreach (var skip in spec.GetProperty("clip_skips").EnumerateArray().Select(s => s.GetInt32()))
        {
            var actual = PromptChunks.KohyaConditioning(model, tokenizer, new[] { caption }, length, skip);
            Assert.Equal(new long[] { 1, length + 2, 32 }, actual.shape);
            var expected = Read($"{key}_skip{skip}");
            output.WriteLine($"{key} clip skip {skip}: max |diff| {TensorAssert.MaxAbsDiff(expected, actual[0]):G3}");
            TensorAssert.Close(expected, actual[0], Tolerance, $"{key} clip skip {skip}");
        }
    }

    [Theory]
    [MemberData(nameof(A1111Keys))]
    public void A1111GenerationEncodingMatchesTransformers(string key)
    {
        using var scope = NewDisposeScope();
        var spec = Case("a1111", key);
        string prompt = spec.GetProperty("prompt").GetString()!, negative = spec.GetProperty("negative_prompt").GetString()!;
        var tokenizer = Tokenizer();
        foreach (var (side, text) in new[] { ("prompt", prompt), ("negative", negative) })
        {
            var chunks = PromptChunks.A1111Chunks(tokenizer, text);
            Assert.Equal(Read($"{key}_{side}_ids").reshape(-1).data<long>().ToArray(), chunks.SelectMany(c => c).ToArray());
        }

        using var model = TextEncoderParityTests.LoadFixtureTextEncoder();
        using var noGrad = no_grad();
        int padded = spec.GetProperty("padded_chunks").GetInt32();
        foreach (int skip in new[] { 1, 2 })
        {
            var actual = PromptChunks.A1111Conditioning(model, tokenizer, new[] { negative, prompt }, skip);
            Assert.Equal(new long[] { 2, padded * 77, 32 }, actual.shape);
            var expected = Read($"{key}_skip{skip}");
            output.WriteLine($"{key} clip skip {skip}: max |diff| {TensorAssert.MaxAbsDiff(expected, actual):G3}");
            TensorAssert.Close(expected, actual, Tolerance, $"{key} clip skip {skip}");
        }
    }

    [Fact]
    public void TheFixtureCoversChunkingCommaBacktrackAndTruncation()
    {
        var kohya = Cases.Value.RootElement.GetProperty("cases").GetProperty("kohya").EnumerateArray().ToList();
        Assert.Contains(kohya, c => c.GetProperty("caption_tokens").GetInt32() is > 75 and <= 150);
        Assert.Contains(kohya, c => c.GetProperty("caption_tokens").GetInt32() is > 150 and <= 225);
        Assert.Contains(kohya, c => c.GetProperty("caption_tokens").GetInt32() > 225);
        // A comma within 20 tokens of a chunk's end moves the rest to the next chunk: the first chunk has fewer than 75 tokens.
        var tags = Read("a1111_tags_vs_short_negative_prompt_ids");
        Assert.True(tags[0].data<long>().Count(id => id != 49407) - 1 < 75);
    }

    [Fact]
    public void ClipSkipChangesTheEmbeddingAndClipSkipOneIsTheLastHiddenState()
    {
        using var scope = NewDisposeScope();
        using var model = TextEncoderParityTests.LoadFixtureTextEncoder();
        using var noGrad = no_grad();
        var ids = Tokenizer().EncodeBatch(new[] { "a photo of a cat" });
        var last = model.Forward(ids).LastHiddenState;
        Assert.True(TensorAssert.BitEqual(last, model.Conditioning(ids, 1)), "clip skip 1 must be today's last hidden state, bit for bit");
        Assert.True(TensorAssert.MaxAbsDiff(last, model.Conditioning(ids, 2)) > 1e-2, "clip skip 2 must change the embedding");
        // The default training encoding (75 tokens, clip skip 1) is the plain 77-token encoding, bit for bit.
        Assert.True(TensorAssert.BitEqual(last, PromptChunks.KohyaConditioning(model, Tokenizer(), new[] { "a photo of a cat" }, 75, 1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Conditioning(ids, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Conditioning(ids, 0));
    }

    [Fact]
    public void A1111ChunksOfShortAndEmptyPromptsAreThePlainEncoding()
    {
        var tokenizer = Tokenizer();
        foreach (string prompt in new[] { "", "a photo of a cat", string.Join(" ", Enumerable.Repeat("cat", 75)) })
            Assert.Equal(tokenizer.Encode(prompt).InputIds, Assert.Single(PromptChunks.A1111Chunks(tokenizer, prompt)));
        Assert.Equal(2, PromptChunks.A1111Chunks(tokenizer, string.Join(" ", Enumerable.Repeat("cat", 76))).Count);
    }
}
