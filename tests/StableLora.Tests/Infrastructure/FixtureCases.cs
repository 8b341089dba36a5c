using System.Text.Json;
using System.Text.RegularExpressions;

namespace StableLora.Tests.Infrastructure;

/// <summary>The machine-readable description of the fixture's cases (<c>expected/cases.json</c>).</summary>
internal static class FixtureCases
{
    // Python's json writes -Infinity/Infinity/NaN bare (e.g. DPM-Solver's lambda_min_clipped); JSON has no such
    // literals, so they are read as strings.
    private static readonly Lazy<JsonDocument> Document = new(() => JsonDocument.Parse(
        Regex.Replace(File.ReadAllText(FixturePaths.Expected("cases.json")), @"(?<=[:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])", "\"$1\"")));

    public static JsonElement Root => Document.Value.RootElement;

    public static JsonElement Case(string id) =>
        Root.GetProperty("cases").EnumerateArray().First(c => c.GetProperty("id").GetString() == id);

    /// <summary>The generation options of a seeded pipeline case (<c>seeded_*</c>): negative prompt, size, steps, guidance, count and seed.</summary>
    public static GenerationOptions SeededOptions(string id)
    {
        var spec = Case(id);
        var negative = spec.GetProperty("negative_prompt");
        return new GenerationOptions
        {
            NegativePrompt = negative.ValueKind == JsonValueKind.Null ? null : negative.GetString(),
            Width = spec.GetProperty("width").GetInt32(),
            Height = spec.GetProperty("height").GetInt32(),
            Steps = spec.GetProperty("num_inference_steps").GetInt32(),
            GuidanceScale = spec.GetProperty("guidance_scale").GetDouble(),
            ImageCount = spec.GetProperty("num_images_per_prompt").GetInt32(),
            Seed = spec.GetProperty("seed").GetUInt64(),
        };
    }

    /// <summary>The (abs, rel) tolerance of a case, optionally one named part of it ("grads", "image", ...).</summary>
    public static Tolerance Tolerance(string id, string? part = null)
    {
        var tolerance = Case(id).GetProperty("tolerance");
        if (part is not null)
            tolerance = tolerance.GetProperty(part);
        return new Tolerance(tolerance.GetProperty("abs").GetDouble(), tolerance.GetProperty("rel").GetDouble());
    }
}

/// <summary>Pass if |actual - expected| &lt;= Abs + Rel * |expected| elementwise (the fixture's convention).</summary>
internal readonly record struct Tolerance(double Abs, double Rel);
