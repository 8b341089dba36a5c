using System.Globalization;
using System.Text.Json;
using StableLora.Lora;
using static TorchSharp.torch;

namespace StableLora.IO;

/// <summary>What a LoRA file holds once parsed: its modules in file order, its format, its metadata, and the modules whose names it could not place.</summary>
internal sealed record LoraFileContent(string Path, LoraFileFormat Format, IReadOnlyList<ModuleAdapterWeights> Modules, IReadOnlyDictionary<string, string> Metadata,
    IReadOnlyList<string> Unrecognised);

/// <summary>
/// Reads a LoRA in any layout the SD 1.x ecosystem uses (safetensors or PyTorch pickle), detecting the layout from its
/// keys: kohya (<c>lora_unet_*</c>, <c>lora_te_*</c>; LoRA, LoCon, LyCORIS LoHa / LoKr / full, DoRA), the attention-processor format's
/// AttnProcsLayers, PEFT (<c>lora_A</c> / <c>lora_B</c>) and diffusers 0.21 (<c>lora.down</c> / <c>lora.up</c>,
/// <c>lora_linear_layer</c>). Each module is checked on its own terms: every part present, ranks agreeing, floating-point
/// values, positive finite alphas, and nothing but tensors.
/// </summary>
internal static class LoraFileReader
{
    private const string PeftMetadataKey = "lora_adapter_metadata";

    private enum Role
    {
        Down, Up, Mid, Alpha, DoraScale, Magnitude,
        HadaW1A, HadaW1B, HadaW2A, HadaW2B, HadaT1, HadaT2,
        LokrW1, LokrW1A, LokrW1B, LokrW2, LokrW2A, LokrW2B, LokrT2,
        Diff, DiffBias,
    }

    // Longest first, so that ".lora.down.weight" wins over ".down.weight".
    private static readonly (string Suffix, Role Role)[] Suffixes = new (string, Role)[]
    {
        (".lora_linear_layer.down.weight", Role.Down), (".lora_linear_layer.up.weight", Role.Up),
        (".lora_down.weight", Role.Down), (".lora_up.weight", Role.Up), (".lora_mid.weight", Role.Mid),
        (".lora.down.weight", Role.Down), (".lora.up.weight", Role.Up),
        (".lora_A.weight", Role.Down), (".lora_B.weight", Role.Up), (".lora_magnitude_vector", Role.Magnitude),
        (".down.weight", Role.Down), (".up.weight", Role.Up),
        (".hada_w1_a", Role.HadaW1A), (".hada_w1_b", Role.HadaW1B), (".hada_w2_a", Role.HadaW2A), (".hada_w2_b", Role.HadaW2B),
        (".hada_t1", Role.HadaT1), (".hada_t2", Role.HadaT2),
        (".lokr_w1_a", Role.LokrW1A), (".lokr_w1_b", Role.LokrW1B), (".lokr_w2_a", Role.LokrW2A), (".lokr_w2_b", Role.LokrW2B),
        (".lokr_w1", Role.LokrW1), (".lokr_w2", Role.LokrW2), (".lokr_t2", Role.LokrT2),
        (".dora_scale", Role.DoraScale), (".diff_b", Role.DiffBias), (".diff", Role.Diff), (".alpha", Role.Alpha),
    }.OrderByDescending(s => s.Item1.Length).ToArray();

    public static LoraFileContent Read(string path)
    {
        using var reader = TensorFiles.Open(path);
        if (reader is TorchPickleReader { NonTensorKeys.Count: > 0 } pickle)
            throw new InvalidModelFileException(path, pickle.NonTensorKeys[0], "a LoRA state dict holds only tensors, but this entry is not a tensor");
        if (reader.Tensors.Count == 0)
            throw new InvalidModelFileException(path, null, "the file holds no tensors");
        var metadata = reader is SafetensorsReader safetensors ? safetensors.Metadata : new Dictionary<string, string>();

        // Group the tensors by module name (the key without its role suffix), in file order.
        var groups = new Dictionary<string, Dictionary<Role, string>>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var info in reader.Tensors)
        {
            var (name, role) = Split(path, info.Name);
            if (!groups.TryGetValue(name, out var parts))
            {
                groups[name] = parts = new Dictionary<Role, string>();
                order.Add(name);
            }

            if (!parts.TryAdd(role, info.Name))
                throw new InvalidModelFileException(path, info.Name, $"a second {role} tensor for module '{name}'");
        }

        RefuseOtherFamilies(path, metadata, order);
        var format = Detect(path, order, groups);
        var peftAlphas = format == LoraFileFormat.Peft ? PeftAlphas(path, metadata) : null;
        var modules = new List<ModuleAdapterWeights>();
        var unrecognised = new List<string>();
        foreach (string name in order)
        {
            var parts = groups[name];
            string firstKey = parts.Values.First();
            string? key = format switch
            {
                LoraFileFormat.Kohya => LoraKeyNames.FromKohya(name),
                LoraFileFormat.AttnProcs => LoraKeyNames.FromAttnProcs(name),
                _ => LoraKeyNames.FromDiffusers(name),
            };
            if (key is null)
            {
                unrecognised.Add(firstKey);
                continue;
            }

            modules.Add(ReadModule(reader, key, parts, peftAlphas) with { SourcePath = path });
        }

        if (modules.Count == 0 && unrecognised.Count > 0)
            throw new InvalidModelFileException(path, unrecognised[0], "no module name of this file is an SD 1.x/2.x UNet or text-encoder layer (is it for another model?)");
        return new LoraFileContent(path, format, modules, metadata, unrecognised);
    }

    private static (string Name, Role Role) Split(string path, string key)
    {
        foreach (var (suffix, role) in Suffixes)
        {
            if (key.EndsWith(suffix, StringComparison.Ordinal) && key.Length > suffix.Length)
                return (key[..^suffix.Length], role);
        }

        throw new InvalidModelFileException(path, key,
            "not a LoRA tensor (expected kohya lora_down/lora_up/alpha, LyCORIS hada_*/lokr_*/diff, dora_scale, PEFT lora_A/lora_B, or diffusers lora.down/lora.up)");
    }

    /// <summary>SDXL LoRAs (a second text encoder, SDXL metadata) are refused here; SD 2.x against 1.x is checked against the model.</summary>
    private static void RefuseOtherFamilies(string path, IReadOnlyDictionary<string, string> metadata, IReadOnlyList<string> names)
    {
        string? second = names.FirstOrDefault(n => n.StartsWith(LoraKeyNames.KohyaTextEncoder2Prefix, StringComparison.Ordinal));
        if (second is not null)
            throw new InvalidModelFileException(path, second, "this LoRA was made for SDXL (it adapts a second text encoder); StableLora runs SD 1.x and 2.x models");
        if (metadata.TryGetValue("ss_base_model_version", out var version) && version.StartsWith("sdxl", StringComparison.Ordinal))
            throw new InvalidModelFileException(path, "ss_base_model_version", $"this LoRA was made for SDXL ({version}); StableLora runs SD 1.x and 2.x models");
        if (metadata.TryGetValue("modelspec.architecture", out var architecture) && architecture.StartsWith("stable-diffusion-xl", StringComparison.Ordinal))
            throw new InvalidModelFileException(path, "modelspec.architecture", $"this LoRA was made for SDXL ({architecture}); StableLora runs SD 1.x and 2.x models");
    }

    private static LoraFileFormat Detect(string path, IReadOnlyList<string> names, Dictionary<string, Dictionary<Role, string>> groups)
    {
        var formats = names.Select(n => (Name: n, Format: FormatOf(n, groups[n]))).ToList();
        var first = formats[0].Format;
        var other = formats.FirstOrDefault(f => f.Format != first);
        if (other.Name is not null)
            throw new InvalidModelFileException(path, groups[other.Name].Values.First(),
                $"this module is named in the {Describe(other.Format)} layout but '{groups[formats[0].Name].Values.First()}' in the {Describe(first)} layout; a LoRA file uses one");
        return first;
    }

    private static LoraFileFormat FormatOf(string name, Dictionary<Role, string> parts)
    {
        if (name.StartsWith("lora_", StringComparison.Ordinal))
            return LoraFileFormat.Kohya;
        if (name.Contains(LoraKeyNames.ProcessorSuffix + ".", StringComparison.Ordinal))
            return LoraFileFormat.AttnProcs;
        string anyKey = parts.Values.First();
        if (parts.Values.Any(k => k.EndsWith(".lora_A.weight", StringComparison.Ordinal) || k.EndsWith(".lora_B.weight", StringComparison.Ordinal)))
            return LoraFileFormat.Peft;
        return anyKey.Contains(".lora", StringComparison.Ordinal) ? LoraFileFormat.DiffusersLegacy : LoraFileFormat.Peft;
    }

    private static string Describe(LoraFileFormat format) => format switch
    {
        LoraFileFormat.Kohya => "kohya",
        LoraFileFormat.AttnProcs => "diffusers AttnProcsLayers (lora_weights.pt)",
        LoraFileFormat.Peft => "PEFT",
        _ => "diffusers 0.21",
    };

    private static ModuleAdapterWeights ReadModule(ITensorReader reader, string key, Dictionary<Role, string> parts, Func<string, double?>? peftAlpha)
    {
        string Key(Role role) => parts[role];
        Tensor? Optional(Role role) => parts.TryGetValue(role, out var name) ? CheckedWeight(reader, name) : null;
        Tensor Required(Role role, string what)
        {
            if (!parts.ContainsKey(role))
                throw new InvalidModelFileException(reader.Path, parts.Values.First(), $"module '{key}' lacks its {what}");
            return CheckedWeight(reader, parts[role]);
        }

        double? alpha = parts.TryGetValue(Role.Alpha, out var alphaKey) ? ReadAlpha(reader, alphaKey) : null;
        var dora = Optional(Role.DoraScale);
        if (parts.ContainsKey(Role.Magnitude))
            dora = CheckedWeight(reader, parts[Role.Magnitude]); // PEFT's DoRA magnitude: per output channel

        ModuleAdapterWeights module;
        if (parts.Keys.Any(r => r.ToString().StartsWith("Hada", StringComparison.Ordinal)))
        {
            module = new LohaModuleWeights(key, Required(Role.HadaW1A, "hada_w1_a"), Required(Role.HadaW1B, "hada_w1_b"), Required(Role.HadaW2A, "hada_w2_a"),
                Required(Role.HadaW2B, "hada_w2_b"), alpha, parts.Values.First(), Optional(Role.HadaT1), Optional(Role.HadaT2));
        }
        else if (parts.Keys.Any(r => r.ToString().StartsWith("Lokr", StringComparison.Ordinal)))
        {
            var lokr = new LokrModuleWeights(key, alpha, parts.Values.First())
            {
                W1 = Optional(Role.LokrW1), W1A = Optional(Role.LokrW1A), W1B = Optional(Role.LokrW1B),
                W2 = Optional(Role.LokrW2), W2A = Optional(Role.LokrW2A), W2B = Optional(Role.LokrW2B), T2 = Optional(Role.LokrT2),
            };
            if (lokr.W1 is null && (lokr.W1A is null || lokr.W1B is null))
                throw new InvalidModelFileException(reader.Path, parts.Values.First(), $"LoKr module '{key}' has neither lokr_w1 nor lokr_w1_a and lokr_w1_b");
            if (lokr.W2 is null && (lokr.W2A is null || lokr.W2B is null))
                throw new InvalidModelFileException(reader.Path, parts.Values.First(), $"LoKr module '{key}' has neither lokr_w2 nor lokr_w2_a and lokr_w2_b");
            module = lokr;
        }
        else if (parts.ContainsKey(Role.Diff))
        {
            module = new FullModuleWeights(key, CheckedWeight(reader, Key(Role.Diff)), Optional(Role.DiffBias), Key(Role.Diff));
        }
        else
        {
            if (!parts.ContainsKey(Role.Down))
            {
                string what = parts.ContainsKey(Role.Up) ? "this up weight has no matching down weight" : "an alpha (or scale) without LoRA weights for its module";
                throw new InvalidModelFileException(reader.Path, parts.Values.First(), what);
            }

            if (!parts.ContainsKey(Role.Up))
                throw new InvalidModelFileException(reader.Path, Key(Role.Down), "this down weight has no matching up weight");
            var down = CheckedWeight(reader, Key(Role.Down));
            var up = CheckedWeight(reader, Key(Role.Up));
            var mid = Optional(Role.Mid);
            CheckLoraShapes(reader.Path, Key(Role.Down), Key(Role.Up), down, up, mid);
            double effectiveAlpha = alpha ?? peftAlpha?.Invoke(key) ?? (mid?.shape[0] ?? down.shape[0]);
            module = new LoraModuleWeights(key, down, up, effectiveAlpha, Key(Role.Down), mid);
        }

        return module with { DoraScale = dora };
    }

    private static void CheckLoraShapes(string path, string downKey, string upKey, Tensor down, Tensor up, Tensor? mid)
    {
        if (down.dim() is not (2 or 4))
            throw new InvalidModelFileException(path, downKey, $"a LoRA down weight is 2-D (Linear) or 4-D (convolution), this one is {TensorInfo.FormatShape(down.shape)}");
        if (up.dim() is not (2 or 4) || up.shape.Skip(2).Any(d => d != 1))
            throw new InvalidModelFileException(path, upKey, $"a LoRA up weight is [out, r] or [out, r, 1, 1], this one is {TensorInfo.FormatShape(up.shape)}");
        long rank = mid?.shape[0] ?? down.shape[0];
        if (down.shape[0] != up.shape[1] && mid is null)
            throw new InvalidModelFileException(path, downKey,
                $"rank mismatch: the down weight {TensorInfo.FormatShape(down.shape)} has rank {down.shape[0]} but '{upKey}' {TensorInfo.FormatShape(up.shape)} has rank {up.shape[1]}");
        if (mid is not null && (mid.dim() != 4 || mid.shape[1] != down.shape[0] || up.shape[1] != rank))
            throw new InvalidModelFileException(path, downKey, $"a Tucker LoCon's mid weight {TensorInfo.FormatShape(mid.shape)} does not fit down {TensorInfo.FormatShape(down.shape)} and up {TensorInfo.FormatShape(up.shape)}");
    }

    private static Tensor CheckedWeight(ITensorReader reader, string key)
    {
        var info = reader.Find(key)!;
        if (!TensorDTypes.IsFloatingPoint(info.DType))
            throw new InvalidModelFileException(reader.Path, key, $"a LoRA weight must be floating point, this one is {TensorDTypes.Describe(info.DType)}");
        if (info.Shape.Length == 0 || info.Shape.Length > 4)
            throw new InvalidModelFileException(reader.Path, key, $"a LoRA weight has 1 to 4 dimensions, this one is {info.ShapeText}");
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
            throw new InvalidModelFileException(reader.Path, key, $"alpha {value.ToString(CultureInfo.InvariantCulture)} is not a positive finite number");
        return value;
    }

    /// <summary>
    /// diffusers (0.33+) stores the PEFT config in the <c>lora_adapter_metadata</c> JSON: <c>unet.lora_alpha</c> /
    /// <c>text_encoder.lora_alpha</c> for every module of a component, and <c>….alpha_pattern</c> for modules that
    /// differ (matched by module path). Returns alpha by module key.
    /// </summary>
    private static Func<string, double?>? PeftAlphas(string path, IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(PeftMetadataKey, out var json))
            return null;
        var common = new Dictionary<string, double>(StringComparer.Ordinal);
        var patterns = new Dictionary<string, double>(StringComparer.Ordinal);
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(path, PeftMetadataKey, "the metadata is not a JSON object");
            foreach (string component in new[] { ModuleKeys.Unet, ModuleKeys.TextEncoder })
            {
                foreach (var key in new[] { $"{component}.lora_alpha", component == ModuleKeys.Unet ? "lora_alpha" : "" }.Where(k => k.Length > 0))
                {
                    if (!common.ContainsKey(component) && root.TryGetProperty(key, out var alpha) && alpha.ValueKind == JsonValueKind.Number)
                        common[component] = CheckedAlpha(path, $"{PeftMetadataKey}.{key}", alpha.GetDouble());
                }

                foreach (var key in new[] { $"{component}.alpha_pattern", component == ModuleKeys.Unet ? "alpha_pattern" : "" }.Where(k => k.Length > 0))
                {
                    if (!root.TryGetProperty(key, out var pattern) || pattern.ValueKind != JsonValueKind.Object)
                        continue;
                    foreach (var entry in pattern.EnumerateObject().Where(e => e.Value.ValueKind == JsonValueKind.Number))
                        patterns[$"{component}.{entry.Name}"] = CheckedAlpha(path, $"{PeftMetadataKey}.{key}.{entry.Name}", entry.Value.GetDouble());
                }
            }
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, PeftMetadataKey, $"the metadata is not valid JSON: {e.Message}", e);
        }

        return key => patterns.TryGetValue(key, out double specific) ? specific : common.TryGetValue(ModuleKeys.ComponentOf(key), out double shared) ? shared : null;
    }

    private static double CheckedAlpha(string path, string key, double value) =>
        double.IsFinite(value) && value > 0
            ? value
            : throw new InvalidModelFileException(path, key, $"alpha {value.ToString(CultureInfo.InvariantCulture)} is not a positive finite number");
}
