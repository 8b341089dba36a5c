using System.Text.Json;
using StableLora.Pipeline;

namespace StableLora.Hub;

/// <summary>
/// The files of a diffusers SD pipeline repository that StableLora reads: <c>model_index.json</c>, the configs of the
/// UNet, VAE, text encoder and scheduler, the tokenizer's files, and one weights file (or shard set) per model,
/// chosen in <see cref="WeightFiles"/>' order (safetensors first, the variant first when one is asked for).
/// Safety checker, feature extractor and the other weight formats are never fetched.
/// </summary>
internal static class PipelineFiles
{
    public static readonly string[] Required =
    {
        ModelIndex.FileName,
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
    };

    /// <summary>Read when present, with defaults otherwise.</summary>
    public static readonly string[] Optional = { "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json" };

    public static readonly (string Component, WeightNames Names)[] Weights =
    {
        ("unet", WeightFiles.Diffusers),
        ("vae", WeightFiles.Diffusers),
        ("text_encoder", WeightFiles.Transformers),
    };

    /// <summary>The weight files to look for in <paramref name="component"/>, best first, as repository paths.</summary>
    public static IEnumerable<string> WeightCandidates(string component, WeightNames names, string? variant) =>
        WeightFiles.Candidates(names, variant).Distinct().Select(file => $"{component}/{file}");

    public static bool IsShardIndex(string file) => file.EndsWith(".json", StringComparison.OrdinalIgnoreCase);

    /// <summary>The shard files a <c>*.index.json</c> lists, as repository paths beside it.</summary>
    public static IReadOnlyList<string> Shards(string indexPath, string indexRepoPath)
    {
        using var document = ParseIndex(indexPath);
        if (!document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(indexPath, "weight_map", "the shard index has no weight_map object");
        string folder = indexRepoPath.Contains('/', StringComparison.Ordinal) ? indexRepoPath[..(indexRepoPath.LastIndexOf('/') + 1)] : "";
        var shards = new List<string>();
        foreach (var entry in map.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new InvalidModelFileException(indexPath, entry.Name, "the weight_map entry is not a file name");
            string shard = folder + entry.Value.GetString();
            try
            {
                HubCache.ToLocal(shard);
            }
            catch (ArgumentException e)
            {
                throw new InvalidModelFileException(indexPath, entry.Name, e.Message, e);
            }

            if (!shards.Contains(shard))
                shards.Add(shard);
        }

        return shards;
    }

    /// <summary>The first file of the pipeline that the snapshot lacks (described with the alternatives for weights), or null when it has them all.</summary>
    public static (string File, string Description)? FirstMissing(string snapshot, string? variant)
    {
        foreach (string file in Required)
        {
            if (!HubCache.Present(Local(snapshot, file)))
                return (file, file);
        }

        foreach (var (component, names) in Weights)
        {
            var candidates = WeightCandidates(component, names, variant).ToList();
            string? found = candidates.FirstOrDefault(c => HubCache.Present(Local(snapshot, c)));
            if (found is null)
                return (candidates[0], $"{candidates[0]} (or another {component} weights file: {string.Join(", ", candidates.Skip(1).Select(c => c[(component.Length + 1)..]))})");
            if (IsShardIndex(found))
            {
                string? shard = Shards(Local(snapshot, found), found).FirstOrDefault(s => !HubCache.Present(Local(snapshot, s)));
                if (shard is not null)
                    return (shard, shard);
            }
        }

        return null;
    }

    private static string Local(string snapshot, string repoPath) => Path.Combine(snapshot, HubCache.ToLocal(repoPath));

    private static JsonDocument ParseIndex(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, null, $"not valid JSON: {e.Message}", e);
        }
    }
}
