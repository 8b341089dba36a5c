using System.Globalization;
using System.Text.Json;
using static TorchSharp.torch;

namespace StableLora.IO;

/// <summary>What a LoRA file holds once parsed: its layers in file order, its format and its metadata.</summary>
internal sealed record LoraFileContent(string Path, LoraFileFormat Format, IReadOnlyList<LoraModuleWeights> Modules, IReadOnlyDictionary<string, string> Metadata);

/// <summary>
/// Reads a LoRA in any of the <see cref="LoraFileFormat"/> layouts (safetensors or PyTorch pickle), detecting the
/// layout from its keys, and checks it on its own terms: every layer has both halves, ranks agree, shapes are 2-D,
/// values are floating point, alphas are positive and finite, and there is nothing but tensors.
/// </summary>
internal static class LoraFileReader
{
    private const string PeftMetadataKey = "lora_adapter_metadata";

    public static LoraFileContent Read(string path)
    {
        using var reader = TensorFiles.Open(path);
        if (reader is TorchPickleReader { NonTensorKeys.Count: > 0 } pickle)
            throw new InvalidModelFileException(path, pickle.NonTensorKeys[0], "a LoRA state dict holds only tensors, but this entry is not a tensor");
        if (reader.Tensors.Count == 0)
            throw new InvalidModelFileException(path, null, "the file holds no tensors");

        var metadata = reader is SafetensorsReader safetensors ? safetensors.Metadata : new Dictionary<string, string>();
        var format = Detect(path, reader.Tensors.Select(t => t.Name).ToList());
        var modules = format switch
        {
            LoraFileFormat.AttnProcs => ReadPairs(reader, ParseAttnProcsKey, alphaKeyOf: null, configuredAlpha: NoAlpha),
            LoraFileFormat.Kohya => ReadPairs(reader, ParseKohyaKey, alphaKeyOf: KohyaAlphaKey, configuredAlpha: NoAlpha),
            LoraFileFormat.Peft => ReadPairs(reader, ParsePeftKey, alphaKeyOf: ModuleAlphaKey, configuredAlpha: PeftAlphas(path, metadata)),
            _ => ReadPairs(reader, ParseLegacyKey, alphaKeyOf: ModuleAlphaKey, configuredAlpha: NoAlpha),
        };
        return new LoraFileContent(path, format, modules, metadata);
    }

    private static LoraFileFormat Detect(string path, IReadOnlyList<string> keys)
    {
        var weights = keys.Where(k => !k.EndsWith(".alpha", StringComparison.Ordinal)).ToList();
        if (weights.Count == 0)
            throw new InvalidModelFileException(path, keys[0], "the file holds alphas but no LoRA weights");
        string first = weights[0];
        if (keys.Any(k => k.StartsWith("lora_te", StringComparison.Ordinal) || k.StartsWith("text_encoder.", StringComparison.Ordinal)))
            throw new InvalidModelFileException(path, keys.First(k => k.StartsWith("lora_te", StringComparison.Ordinal) || k.StartsWith("text_encoder.", StringComparison.Ordinal)),
                "text-encoder LoRA layers are not supported (StableLora adapts the UNet's attention only)");
        if (weights.All(k => k.StartsWith("lora_unet_", StringComparison.Ordinal)))
            return LoraFileFormat.Kohya;
        if (weights.All(k => k.Contains(LoraModulePaths.ProcessorSuffix + ".", StringComparison.Ordinal) && k.Contains("_lora.", StringComparison.Ordinal)))
            return LoraFileFormat.AttnProcs;
        if (weights.All(k => k.EndsWith(".lora_A.weight", StringComparison.Ordinal) || k.EndsWith(".lora_B.weight", StringComparison.Ordinal)))
            return LoraFileFormat.Peft;
        if (weights.All(k => k.EndsWith(".lora.down.weight", StringComparison.Ordinal) || k.EndsWith(".lora.up.weight", StringComparison.Ordinal)))
            return LoraFileFormat.DiffusersLegacy;
        throw new InvalidModelFileException(path, first,
            "unrecognised LoRA key naming (expected the seed's AttnProcsLayers, kohya lora_unet_*, PEFT lora_A/lora_B or diffusers lora.down/up)");
    }

    /// <summary>Parses one weight key into (module path, is-down); null means the key is not a LoRA weight of a supported module.</summary>
    private delegate (string ModulePath, bool IsDown)? KeyParser(string key);

    private static double? NoAlpha(string modulePath) => null;

    private static string KohyaAlphaKey(string downKey) => downKey[..^".lora_down.weight".Length] + ".alpha";

    /// <summary>PEFT-style and legacy diffusers files may carry per-module alphas as <c>&lt;module&gt;.alpha</c>.</summary>
    private static string ModuleAlphaKey(string downKey)
    {
        int cut = downKey.EndsWith(".lora_A.weight", StringComparison.Ordinal) ? ".lora_A.weight".Length : ".lora.down.weight".Length;
        return downKey[..^cut] + ".alpha";
    }

    private static List<LoraModuleWeights> ReadPairs(ITensorReader reader, KeyParser parse, Func<string, string>? alphaKeyOf, Func<string, double?> configuredAlpha)
    {
        var downs = new Dictionary<string, string>(StringComparer.Ordinal);
        var ups = new Dictionary<string, string>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var info in reader.Tensors)
        {
            if (info.Name.EndsWith(".alpha", StringComparison.Ordinal))
                continue;
            var parsed = parse(info.Name) ?? throw new InvalidModelFileException(reader.Path, info.Name,
                "not a LoRA layer of a UNet attention projection (StableLora supports to_q, to_k, to_v and to_out.0 of attn1/attn2)");
            var target = parsed.IsDown ? downs : ups;
            if (!target.TryAdd(parsed.ModulePath, info.Name))
                throw new InvalidModelFileException(reader.Path, info.Name, $"a second {(parsed.IsDown ? "down" : "up")} weight for {parsed.ModulePath}");
            if (!order.Contains(parsed.ModulePath))
                order.Add(parsed.ModulePath);
        }

        var modules = new List<LoraModuleWeights>();
        foreach (var modulePath in order)
        {
            if (!downs.TryGetValue(modulePath, out var downKey))
                throw new InvalidModelFileException(reader.Path, ups[modulePath], "this up weight has no matching down weight");
            if (!ups.TryGetValue(modulePath, out var upKey))
                throw new InvalidModelFileException(reader.Path, downKey, "this down weight has no matching up weight");
            var down = CheckedWeight(reader, downKey);
            var up = CheckedWeight(reader, upKey);
            if (down.shape[0] != up.shape[1])
                throw new InvalidModelFileException(reader.Path, downKey,
                    $"rank mismatch: the down weight {TensorInfo.FormatShape(down.shape)} has rank {down.shape[0]} but '{upKey}' {TensorInfo.FormatShape(up.shape)} has rank {up.shape[1]}");

            double alpha = configuredAlpha(modulePath) ?? down.shape[0];
            if (alphaKeyOf is not null && reader.Find(alphaKeyOf(downKey)) is { } alphaInfo)
                alpha = ReadAlpha(reader, alphaInfo.Name);
            modules.Add(new LoraModuleWeights(modulePath, down, up, alpha, downKey));
        }

        var stray = reader.Tensors.Select(t => t.Name).FirstOrDefault(k => k.EndsWith(".alpha", StringComparison.Ordinal)
            && (alphaKeyOf is null || !downs.Values.Any(d => alphaKeyOf(d) == k)));
        if (stray is not null)
            throw new InvalidModelFileException(reader.Path, stray, "an alpha without LoRA weights for its module");
        return modules;
    }

    private static Tensor CheckedWeight(ITensorReader reader, string key)
    {
        var info = reader.Find(key)!;
        if (info.Shape.Length != 2)
            throw new InvalidModelFileException(reader.Path, key, $"a LoRA weight must be 2-D, this one is {info.ShapeText}");
        if (!TensorDTypes.IsFloatingPoint(info.DType))
            throw new InvalidModelFileException(reader.Path, key, $"a LoRA weight must be floating point, this one is {TensorDTypes.Describe(info.DType)}");
        return reader.Read(key);
    }

    private static double ReadAlpha(ITensorReader reader, string key)
    {
        var info = reader.Find(key)!;
        if (info.ElementCount != 1)
            throw new InvalidModelFileException(reader.Path, key, $"an alpha must be a single number, this one is {info.ShapeText}");
        using var alpha = reader.Read(key);
        double value = alpha.to(ScalarType.Float64).item<double>();
        if (!double.IsFinite(value) || value <= 0)
            throw new InvalidModelFileException(reader.Path, key, $"alpha {value} is not a positive finite number");
        return value;
    }

    private static (string, bool)? ParseAttnProcsKey(string key)
    {
        string name = key.StartsWith("unet.", StringComparison.Ordinal) ? key["unet.".Length..] : key;
        foreach (var (projection, attribute) in LoraModulePaths.ProcessorAttribute)
        {
            foreach (var (suffix, isDown) in new[] { (".down.weight", true), (".up.weight", false) })
            {
                string tail = $"{LoraModulePaths.ProcessorSuffix}.{attribute}{suffix}";
                if (name.EndsWith(tail, StringComparison.Ordinal))
                    return Supported(name[..^tail.Length] + "." + projection, isDown);
            }
        }

        return null;
    }

    private static (string, bool)? ParseKohyaKey(string key)
    {
        foreach (var (suffix, isDown) in new[] { (".lora_down.weight", true), (".lora_up.weight", false) })
        {
            if (key.EndsWith(suffix, StringComparison.Ordinal) && LoraModulePaths.FromKohya(key[..^suffix.Length]) is { } path)
                return (path, isDown);
        }

        return null;
    }

    private static (string, bool)? ParsePeftKey(string key)
    {
        foreach (var (suffix, isDown) in new[] { (".lora_A.weight", true), (".lora_B.weight", false) })
        {
            if (key.EndsWith(suffix, StringComparison.Ordinal))
                return Supported(StripUnetPrefix(key[..^suffix.Length]), isDown);
        }

        return null;
    }

    private static (string, bool)? ParseLegacyKey(string key)
    {
        foreach (var (suffix, isDown) in new[] { (".lora.down.weight", true), (".lora.up.weight", false) })
        {
            if (key.EndsWith(suffix, StringComparison.Ordinal))
                return Supported(StripUnetPrefix(key[..^suffix.Length]), isDown);
        }

        return null;
    }

    private static (string, bool)? Supported(string modulePath, bool isDown) =>
        LoraModulePaths.IsAttentionProjection(modulePath) ? (modulePath, isDown) : null;

    private static string StripUnetPrefix(string path)
    {
        foreach (var prefix in new[] { "unet.", "base_model.model." })
        {
            if (path.StartsWith(prefix, StringComparison.Ordinal))
                return path[prefix.Length..];
        }

        return path;
    }

    /// <summary>
    /// diffusers (0.33+) stores the PEFT config in the <c>lora_adapter_metadata</c> JSON: <c>unet.lora_alpha</c> for
    /// every module, and <c>unet.alpha_pattern</c> for modules that differ (matched here by exact module path).
    /// </summary>
    private static Func<string, double?> PeftAlphas(string path, IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(PeftMetadataKey, out var json))
            return NoAlpha;
        double? common = null;
        var patterns = new Dictionary<string, double>(StringComparer.Ordinal);
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(path, PeftMetadataKey, "the metadata is not a JSON object");
            foreach (var key in new[] { "unet.lora_alpha", "lora_alpha" })
            {
                if (common is null && root.TryGetProperty(key, out var alpha) && alpha.ValueKind == JsonValueKind.Number)
                    common = CheckedAlpha(path, $"{PeftMetadataKey}.{key}", alpha.GetDouble());
            }

            foreach (var key in new[] { "unet.alpha_pattern", "alpha_pattern" })
            {
                if (!root.TryGetProperty(key, out var pattern) || pattern.ValueKind != JsonValueKind.Object)
                    continue;
                foreach (var entry in pattern.EnumerateObject().Where(e => e.Value.ValueKind == JsonValueKind.Number))
                    patterns[entry.Name] = CheckedAlpha(path, $"{PeftMetadataKey}.{key}.{entry.Name}", entry.Value.GetDouble());
            }
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, PeftMetadataKey, $"the metadata is not valid JSON: {e.Message}", e);
        }

        return modulePath => patterns.TryGetValue(modulePath, out double specific) ? specific : common;
    }

    private static double CheckedAlpha(string path, string key, double value) =>
        double.IsFinite(value) && value > 0
            ? value
            : throw new InvalidModelFileException(path, key, $"alpha {value.ToString(CultureInfo.InvariantCulture)} is not a positive finite number");
}
