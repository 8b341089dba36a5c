using System.Text.Json;
using StableLora.Data;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Datasets;

/// <summary>
/// Bucket resolutions, per-image bucket assignment and caption processing equal sd-scripts' on fixtures made by its
/// own code (tools/generate_bucket_fixtures.py and tools/generate_caption_fixtures.py; see Fixtures/buckets/README.md).
/// </summary>
public sealed class BucketAndCaptionParityTests
{
    private static JsonElement Fixture(string folder, string file) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(FixturePaths.Root, folder, file))).RootElement;

    private static (int, int) Pair(JsonElement e) => (e[0].GetInt32(), e[1].GetInt32());

    [Fact]
    public void BucketResolutionsAndAssignmentsEqualSdScripts()
    {
        int compared = 0;
        foreach (var c in Fixture("buckets", "buckets.json").GetProperty("cases").EnumerateArray())
        {
            int resolution = c.GetProperty("resolution").GetInt32(), min = c.GetProperty("min_bucket_reso").GetInt32();
            int max = c.GetProperty("max_bucket_reso").GetInt32(), steps = c.GetProperty("bucket_reso_steps").GetInt32();
            bool noUpscale = c.GetProperty("bucket_no_upscale").GetBoolean();
            string label = $"resolution {resolution}, {min}..{max} step {steps}, no-upscale {noUpscale}";
            var expected = c.GetProperty("resolutions").EnumerateArray().Select(Pair).ToList();
            Assert.True(expected.SequenceEqual(BucketSelector.Resolutions(resolution, resolution, min, max, steps).Select(r => (r.W, r.H))), label);

            var selector = new BucketSelector(noUpscale, resolution, min, max, steps);
            foreach (var a in c.GetProperty("assignments").EnumerateArray())
            {
                var (w, h) = Pair(a.GetProperty("size"));
                var choice = selector.Select(w, h);
                Assert.Equal((label, w, h, Pair(a.GetProperty("bucket"))), (label, w, h, (choice.Width, choice.Height)));
                Assert.Equal((label, w, h, Pair(a.GetProperty("resized"))), (label, w, h, (choice.ResizedWidth, choice.ResizedHeight)));
                Assert.Equal(a.GetProperty("ar_error").GetDouble(), choice.AspectError);
                compared++;
            }
        }

        Assert.True(compared > 400, $"only {compared} assignments compared");
    }

    [Fact]
    public void AnImageTooLongForNoUpscaleBucketsIsNamedNotDividedByZero()
    {
        // sd-scripts raises ZeroDivisionError here (left out of its fixture).
        var selector = new BucketSelector(true, 64, 32, 128, 32);
        var e = Assert.Throws<InvalidDataException>(() => selector.Select(5000, 1000));
        Assert.Contains("5000x1000", e.Message);
    }

    [Fact]
    public void CaptionProcessingFollowsSdScriptsRules()
    {
        foreach (var c in Fixture("captions", "captions.json").GetProperty("cases").EnumerateArray())
        {
            string name = c.GetProperty("name").GetString()!;
            string caption = c.GetProperty("caption").GetString()!;
            string expected = c.GetProperty("expected").GetString()!;
            var settings = Settings(c.GetProperty("options"));
            int epoch = c.GetProperty("epoch").GetInt32();
            string actual = CaptionProcessing.Process(caption, settings, epoch, new Random(1));
            if (!c.GetProperty("random").GetBoolean())
            {
                Assert.Equal((name, expected), (name, actual));
                continue;
            }

            // Random draws differ from Python's: compare what the rules fix.
            var expectedTags = expected.Split(", ");
            var actualTags = actual.Split(", ");
            if (settings.TagDropoutRate == 0)
                Assert.Equal(expectedTags.Order(StringComparer.Ordinal), actualTags.Order(StringComparer.Ordinal));
            int keptFirst = settings.KeepTokensSeparator is { Length: > 0 } sep ? caption[..caption.IndexOf(sep, StringComparison.Ordinal)].Split(',').Length : settings.KeepTokens;
            Assert.Equal(expectedTags.Take(keptFirst), actualTags.Take(keptFirst));
            if (settings.KeepTokensSeparator is { Length: > 0 } separator)
            {
                int keptLast = caption[(caption.LastIndexOf(separator, StringComparison.Ordinal) + separator.Length)..].Split(',').Length;
                Assert.Equal(expectedTags.TakeLast(keptLast), actualTags.TakeLast(keptLast));
            }
        }
    }

    [Fact]
    public void RandomCaptionProcessingIsSeededAndKeepsTheRules()
    {
        var settings = new CaptionSettings(Shuffle: true, KeepTokens: 1, TagDropoutRate: 0.3);
        const string caption = "sks, red, green, blue, yellow, cyan, magenta";
        var outputs = Enumerable.Range(0, 200).Select(seed => CaptionProcessing.Process(caption, settings, 1, new Random(seed))).ToList();
        Assert.Equal(outputs, Enumerable.Range(0, 200).Select(seed => CaptionProcessing.Process(caption, settings, 1, new Random(seed))));
        Assert.True(outputs.Distinct().Count() > 50);
        var all = caption.Split(", ").Skip(1).ToHashSet();
        foreach (var output in outputs)
        {
            var tags = output.Split(", ");
            Assert.Equal("sks", tags[0]);
            Assert.All(tags.Skip(1), t => Assert.Contains(t, all));
            Assert.Equal(tags.Length - 1, tags.Skip(1).Distinct().Count());
        }

        double kept = outputs.Average(o => o.Split(", ").Length - 1) / 6;
        Assert.InRange(kept, 0.6, 0.8);

        // Tag dropout without shuffling keeps the order.
        var dropOnly = new CaptionSettings(TagDropoutRate: 0.5);
        for (int seed = 0; seed < 50; seed++)
        {
            var tags = CaptionProcessing.Process("a, b, c, d, e, f", dropOnly, 1, new Random(seed)).Split(", ").Where(t => t.Length > 0).ToList();
            Assert.Equal(tags.Order(StringComparer.Ordinal), tags);
        }

        // Whole-caption dropout at its rate.
        var dropout = new CaptionSettings(DropoutRate: 0.25);
        var random = new Random(3);
        double empty = Enumerable.Range(0, 4000).Count(_ => CaptionProcessing.Process("a dog", dropout, 1, random).Length == 0) / 4000.0;
        Assert.InRange(empty, 0.22, 0.28);
    }

    [Fact]
    public void TagFrequencyCountsAsSdScripts()
    {
        var frequency = new Dictionary<string, int>();
        CaptionProcessing.CountTags(frequency, "Sks, dog , ,grass");
        CaptionProcessing.CountTags(frequency, "sks, cat");
        Assert.Equal(new Dictionary<string, int> { ["sks"] = 2, ["dog"] = 1, ["grass"] = 1, ["cat"] = 1 }, frequency);
    }

    private static CaptionSettings Settings(JsonElement o)
    {
        string? Text(string key) => o.TryGetProperty(key, out var v) ? v.GetString() : null;
        double Number(string key) => o.TryGetProperty(key, out var v) ? v.GetDouble() : 0;
        return new CaptionSettings(Text("caption_prefix"), Text("caption_suffix"),
            o.TryGetProperty("shuffle_caption", out var s) && s.GetBoolean(), (int)Number("keep_tokens"), Text("keep_tokens_separator"),
            Number("caption_dropout_rate"), Number("caption_tag_dropout_rate"), (int)Number("caption_dropout_every_n_epochs"));
    }
}
