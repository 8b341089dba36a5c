using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace StableLora.Configuration;

/// <summary>
/// sd-scripts' dataset config (<c>--dataset_config</c>, TOML; or the same structure in JSON): <c>[general]</c>
/// defaults, one <c>[[datasets]]</c> and its <c>[[datasets.subsets]]</c>, applied to training options. A subset's key
/// overrides its dataset's, which overrides <c>[general]</c>, as in sd-scripts. StableLora applies caption, crop, flip
/// and mask settings to the whole run, so subsets must agree on them; keys sd-scripts knows that StableLora does not
/// implement, and unknown keys, are errors naming the file and key.
/// </summary>
internal static class DatasetConfigFile
{
    private static readonly HashSet<string> DatasetKeys = new(StringComparer.Ordinal)
    {
        "resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale",
    };

    private static readonly HashSet<string> RunWideSubsetKeys = new(StringComparer.Ordinal)
    {
        "caption_extension", "shuffle_caption", "keep_tokens", "keep_tokens_separator", "caption_dropout_rate", "caption_tag_dropout_rate",
        "caption_dropout_every_n_epochs", "caption_prefix", "caption_suffix", "flip_aug", "random_crop", "alpha_mask",
    };

    private static readonly HashSet<string> SubsetOnlyKeys = new(StringComparer.Ordinal) { "image_dir", "num_repeats", "class_tokens", "is_reg" };

    private static readonly HashSet<string> NotImplemented = new(StringComparer.Ordinal)
    {
        "color_aug", "face_crop_aug_range", "token_warmup_min", "token_warmup_step", "metadata_file", "conditioning_data_dir", "cache_info",
        "enable_wildcard", "secondary_separator", "network_multiplier", "debug_dataset", "validation_seed", "validation_split",
        "resize_interpolation", "custom_attributes", "caption_separator", "in_json",
    };

    /// <summary>The options with the file's settings applied.</summary>
    /// <exception cref="InvalidOptionsException">The file cannot be read, or a key or value is wrong (named with the file).</exception>
    public static LoraTrainingOptions Apply(LoraTrainingOptions options, string path)
    {
        var root = Read(path);
        var errors = new List<string>();
        var general = Table(root, "general", path, errors);
        var datasets = root["datasets"] as JsonArray;
        foreach (var key in root.Select(p => p.Key).Where(k => k is not "general" and not "datasets"))
            errors.Add($"{key}: unknown top-level key (expected [general] and [[datasets]])");
        if (datasets is null || datasets.Count == 0)
            errors.Add("[[datasets]]: none given");
        else if (datasets.Count > 1)
            errors.Add($"[[datasets]]: {datasets.Count} given; StableLora trains one dataset at one resolution (merge the subsets into one [[datasets]])");
        Check(general, "general", errors);
        if (errors.Count > 0 || datasets is null)
            throw Fail(path, errors);

        var dataset = datasets[0] as JsonObject ?? throw Fail(path, new[] { "[[datasets]]: must be a table" });
        Check(dataset, "datasets[0]", errors, "subsets");
        var subsets = (dataset["subsets"] as JsonArray)?.Select(s => s as JsonObject).ToList() ?? new List<JsonObject?>();
        if (subsets.Count == 0)
            errors.Add("datasets[0].subsets: none given ([[datasets.subsets]] with image_dir)");
        for (int i = 0; i < subsets.Count; i++)
        {
            if (subsets[i] is null)
                errors.Add($"datasets[0].subsets[{i}]: must be a table");
            else
                Check(subsets[i]!, $"datasets[0].subsets[{i}]", errors, subsetLevel: true);
        }

        if (errors.Count > 0)
            throw Fail(path, errors);

        string baseDirectory = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        JsonNode? Lookup(JsonObject? subset, string key) => subset?[key] ?? dataset[key] ?? general?[key];
        var reader = new ValueReader(errors);
        var result = options;

        // Run-wide settings: each subset's value (through dataset and general) must agree.
        T? RunWide<T>(string key, Func<JsonNode, string, T?> read)
        {
            var values = subsets.Select((s, i) => Lookup(s, key) is { } node ? read(node, Where(s, key, i)) : default).ToList();
            if (values.Distinct().Count() > 1)
            {
                errors.Add($"{key}: the subsets give different values ({string.Join(", ", values.Select(v => v?.ToString() ?? "unset"))}); StableLora applies it to the whole run");
                return default;
            }

            return values[0];
        }

        string Where(JsonObject? subset, string key, int i) =>
            subset?[key] is not null ? $"datasets[0].subsets[{i}].{key}" : dataset[key] is not null ? $"datasets[0].{key}" : $"general.{key}";

        var subsetList = subsets.Select((s, i) => new DatasetSubset(
            ResolvePath(s!["image_dir"] is { } dir ? reader.String(dir, $"datasets[0].subsets[{i}].image_dir") ?? "" : "", baseDirectory),
            s!["num_repeats"] is { } repeats ? reader.Int(repeats, $"datasets[0].subsets[{i}].num_repeats") ?? 1 : 1,
            s["class_tokens"] is { } tokens ? reader.String(tokens, $"datasets[0].subsets[{i}].class_tokens") : null,
            s["is_reg"] is { } isReg && (reader.Bool(isReg, $"datasets[0].subsets[{i}].is_reg") ?? false))).ToList();
        foreach (var (subset, i) in subsets.Select((s, i) => (s, i)))
        {
            if (subset!["image_dir"] is null)
                errors.Add($"datasets[0].subsets[{i}].image_dir: required");
        }

        int? Int(string key) => Lookup(null, key) is { } node ? reader.Int(node, Where(null, key, 0)) : null;
        bool? Bool(string key) => Lookup(null, key) is { } node ? reader.Bool(node, Where(null, key, 0)) : null;

        int? resolution = null;
        if (Lookup(null, "resolution") is { } resolutionNode)
        {
            if (resolutionNode is JsonArray pair)
            {
                var sides = pair.Select(n => n is null ? null : reader.Int(n, Where(null, "resolution", 0))).ToList();
                if (sides.Count != 2 || sides[0] != sides[1])
                    errors.Add($"{Where(null, "resolution", 0)}: StableLora trains square resolutions (one number, or [n, n])");
                else
                    resolution = sides[0];
            }
            else
            {
                resolution = reader.Int(resolutionNode, Where(null, "resolution", 0));
            }
        }

        var captionExtension = RunWide("caption_extension", reader.String);
        var shuffle = RunWide("shuffle_caption", reader.Bool);
        var keepTokens = RunWide("keep_tokens", reader.Int);
        var separator = RunWide("keep_tokens_separator", reader.String);
        var dropout = RunWide("caption_dropout_rate", reader.Double);
        var tagDropout = RunWide("caption_tag_dropout_rate", reader.Double);
        var everyN = RunWide("caption_dropout_every_n_epochs", reader.Int);
        var prefix = RunWide("caption_prefix", reader.String);
        var suffix = RunWide("caption_suffix", reader.String);
        var flip = RunWide("flip_aug", reader.Bool);
        var crop = RunWide("random_crop", reader.Bool);
        var alphaMask = RunWide("alpha_mask", reader.Bool);
        if (errors.Count > 0)
            throw Fail(path, errors);

        return result with
        {
            Subsets = subsetList,
            DataDirectory = subsetList.Any(s => !s.IsRegularization) ? null : result.DataDirectory,
            Resolution = resolution ?? result.Resolution,
            BatchSize = Int("batch_size") ?? result.BatchSize,
            EnableBucket = Bool("enable_bucket") ?? result.EnableBucket,
            MinBucketReso = Int("min_bucket_reso") ?? result.MinBucketReso,
            MaxBucketReso = Int("max_bucket_reso") ?? result.MaxBucketReso,
            BucketResoSteps = Int("bucket_reso_steps") ?? result.BucketResoSteps,
            BucketNoUpscale = Bool("bucket_no_upscale") ?? result.BucketNoUpscale,
            CaptionExtension = captionExtension ?? result.CaptionExtension,
            UseCaptionFiles = captionExtension is not null || result.UseCaptionFiles,
            ShuffleCaption = shuffle ?? result.ShuffleCaption,
            KeepTokens = keepTokens ?? result.KeepTokens,
            KeepTokensSeparator = separator ?? result.KeepTokensSeparator,
            CaptionDropoutRate = dropout ?? result.CaptionDropoutRate,
            CaptionTagDropoutRate = tagDropout ?? result.CaptionTagDropoutRate,
            CaptionDropoutEveryNEpochs = everyN ?? result.CaptionDropoutEveryNEpochs,
            CaptionPrefix = prefix ?? result.CaptionPrefix,
            CaptionSuffix = suffix ?? result.CaptionSuffix,
            RandomFlip = flip ?? result.RandomFlip,
            RandomCrop = crop ?? result.RandomCrop,
            MaskedLoss = alphaMask is true || result.MaskedLoss,
        };
    }

    private static JsonObject Read(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidOptionsException("DatasetConfig", path, $"cannot read the file: {e.Message}");
        }

        try
        {
            if (Path.GetExtension(path).Equals(".json", StringComparison.OrdinalIgnoreCase))
                return JsonNode.Parse(text) as JsonObject ?? throw new InvalidDataException("the file must hold a JSON object");
            return MiniToml.Parse(text, Path.GetFileName(path));
        }
        catch (Exception e) when (e is InvalidDataException or JsonException)
        {
            throw new InvalidOptionsException("DatasetConfig", path, e.Message);
        }
    }

    private static JsonObject? Table(JsonObject root, string key, string path, List<string> errors)
    {
        if (root[key] is null)
            return null;
        if (root[key] is JsonObject table)
            return table;
        errors.Add($"{key}: must be a table");
        return null;
    }

    private static void Check(JsonObject? table, string where, List<string> errors, string? childArray = null, bool subsetLevel = false)
    {
        if (table is null)
            return;
        foreach (var key in table.Select(p => p.Key))
        {
            if (key == childArray)
                continue;
            bool allowed = RunWideSubsetKeys.Contains(key) || (subsetLevel ? SubsetOnlyKeys.Contains(key) : DatasetKeys.Contains(key));
            if (NotImplemented.Contains(key))
                errors.Add($"{where}.{key}: sd-scripts' option is not supported by StableLora");
            else if (!allowed)
                errors.Add($"{where}.{key}: {(SubsetOnlyKeys.Contains(key) || DatasetKeys.Contains(key) ? "not allowed at this level" : "unknown key")}");
        }
    }

    private static string ResolvePath(string path, string baseDirectory) =>
        path.Length == 0 ? path : Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(baseDirectory, path));

    private static InvalidOptionsException Fail(string path, IReadOnlyList<string> errors) =>
        new(errors.Select(e => new OptionError("DatasetConfig", path, e)).ToList());

    /// <summary>Typed values, each wrong one recorded with its key.</summary>
    private sealed class ValueReader(List<string> errors)
    {
        public string? String(JsonNode node, string key)
        {
            if (node is JsonValue value && value.TryGetValue(out string? text))
                return text;
            errors.Add($"{key}: must be a string");
            return null;
        }

        public int? Int(JsonNode node, string key)
        {
            if (node is JsonValue value && (value.TryGetValue(out long n) || (value.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue && (n = (long)d) == n))
                && n is >= int.MinValue and <= int.MaxValue)
                return (int)n;
            errors.Add($"{key}: must be an integer");
            return null;
        }

        public double? Double(JsonNode node, string key)
        {
            if (node is JsonValue value && (value.TryGetValue(out double d) || (value.TryGetValue(out long n) && (d = n) == d)))
                return d;
            errors.Add($"{key}: must be a number");
            return null;
        }

        public bool? Bool(JsonNode node, string key)
        {
            if (node is JsonValue value && value.TryGetValue(out bool b))
                return b;
            errors.Add($"{key}: must be true or false");
            return null;
        }
    }
}
