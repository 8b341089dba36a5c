using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using StableLora.Layers;
using StableLora.Lora;
using static TorchSharp.torch;

namespace StableLora.IO;

/// <summary>Writes LoRA (and LoCon) modules in each <see cref="LoraFileFormat"/>, atomically.</summary>
internal static class LoraFileWriter
{
    public static void Write(string path, IReadOnlyList<LoraModuleWeights> modules, LoraFileFormat format, LoraExportMetadata? metadata = null)
    {
        if (modules.Count == 0)
            throw new ArgumentException("there are no LoRA layers to write", nameof(modules));
        if (modules.FirstOrDefault(m => !m.IsPlain) is { } special)
            throw new ArgumentException($"'{special.Key}' is a {special.Kind}{(special.DoraScale is null ? "" : " with DoRA")} module; StableLora writes plain LoRA and LoCon modules", nameof(modules));
        using var scope = NewDisposeScope();
        switch (format)
        {
            case LoraFileFormat.AttnProcs:
                if (CannotHoldInSeedFormat(modules) is { } reason)
                    throw new ArgumentException($"the diffusers attention-processor .pt format holds only UNet attention LoRA, but {reason}; write kohya or PEFT", nameof(modules));
                TorchPickleWriter.Write(path, AttnProcsStateDict(modules));
                break;
            case LoraFileFormat.Kohya:
                WriteKohya(path, modules, metadata ?? new LoraExportMetadata());
                break;
            case LoraFileFormat.Peft:
                WritePeft(path, modules);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(format), format, "StableLora writes the AttnProcs (.pt), kohya and PEFT formats");
        }
    }

    /// <summary>Why the attention-processor format cannot hold these modules (a text-encoder or non-attention module), or null when it can.</summary>
    public static string? CannotHoldInSeedFormat(IReadOnlyList<LoraModuleWeights> modules)
    {
        var foreign = modules.FirstOrDefault(m => !LoraKeyNames.IsAttentionProjection(m.Key) || m.Down.dim() != 2 || m.Up.dim() != 2);
        if (foreign is null)
            return null;
        int count = modules.Count(m => !LoraKeyNames.IsAttentionProjection(m.Key));
        return $"{count} module(s) are {(ModuleKeys.IsTextEncoder(foreign.Key) ? "in the text encoder" : "outside the UNet's attention projections")}, e.g. {foreign.Key}";
    }

    /// <summary>
    /// The attention-processor state dict (<c>lora_weights.pt</c>). The format has no alpha, so a layer whose alpha differs from its rank has alpha / rank
    /// folded into its <c>up</c> weight: diffusers' LoRA processors (scale 1) then compute the same output.
    /// </summary>
    public static List<KeyValuePair<string, Tensor>> AttnProcsStateDict(IReadOnlyList<LoraModuleWeights> modules)
    {
        var entries = new List<KeyValuePair<string, Tensor>>();
        foreach (var module in modules)
        {
            string prefix = LoraKeyNames.ToAttnProcs(module.Key);
            double scale = module.Alpha / module.Rank;
            entries.Add(new($"{prefix}.down.weight", module.Down.to(ScalarType.Float32)));
            entries.Add(new($"{prefix}.up.weight", scale == 1.0 ? module.Up.to(ScalarType.Float32) : module.Up.to(ScalarType.Float32).Times(scale)));
        }

        return entries;
    }

    private static void WriteKohya(string path, IReadOnlyList<LoraModuleWeights> modules, LoraExportMetadata metadata)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var module in modules.OrderBy(m => LoraKeyNames.ToKohya(m.Key), StringComparer.Ordinal))
        {
            string name = LoraKeyNames.ToKohya(module.Key);
            tensors.Add(new($"{name}.alpha", tensor((float)module.Alpha)));
            tensors.Add(new($"{name}.lora_down.weight", module.Down.to(ScalarType.Float32)));
            tensors.Add(new($"{name}.lora_up.weight", module.Up.to(ScalarType.Float32)));
        }

        var ss = KohyaMetadata(modules, metadata);
        // kohya hashes a serialisation that carries only the ss_* metadata, then stores the hashes beside it.
        var (modelHash, legacyHash) = KohyaHashes(tensors, ss);
        ss["sshs_model_hash"] = modelHash;
        ss["sshs_legacy_hash"] = legacyHash;
        SafetensorsWriter.Write(path, tensors, ss);
    }

    /// <summary>The <c>ss_*</c> keys as sd-scripts' train_network.py writes them (every value a string).</summary>
    internal static Dictionary<string, string> KohyaMetadata(IReadOnlyList<LoraModuleWeights> modules, LoraExportMetadata metadata)
    {
        bool IsConv(LoraModuleWeights m) => m.Down.dim() == 4 && m.Down.shape[2] > 1;
        // ss_network_dim/alpha describe the UNet's Linear modules; a file without any falls back to whatever it holds.
        var network = modules.Where(m => !IsConv(m) && ModuleKeys.IsUnet(m.Key)).ToList();
        if (network.Count == 0)
            network = modules.Where(m => !IsConv(m)).DefaultIfEmpty(modules[0]).ToList();
        var convs = modules.Where(IsConv).ToList();
        var args = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (convs.Count > 0)
        {
            args["conv_dim"] = MostCommon(convs.Select(m => (double)m.Rank)).ToString(CultureInfo.InvariantCulture);
            args["conv_alpha"] = PythonFloats.Argument(MostCommon(convs.Select(m => m.Alpha)));
        }

        var ss = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["ss_network_module"] = "networks.lora",
            ["ss_network_dim"] = MostCommon(network.Select(m => (double)m.Rank)).ToString(CultureInfo.InvariantCulture),
            ["ss_network_alpha"] = PythonFloats.Repr(MostCommon(network.Select(m => m.Alpha))),
            ["ss_base_model_version"] = metadata.BaseModelVersion,
            ["ss_v2"] = metadata.BaseModelVersion.StartsWith("sd_v2", StringComparison.Ordinal) ? "True" : "False",
            ["ss_network_args"] = args.Count == 0 ? "{}" : JsonSerializer.Serialize(args).Replace("\":\"", "\": \"", StringComparison.Ordinal).Replace("\",\"", "\", \"", StringComparison.Ordinal),
            ["ss_training_comment"] = "trained with StableLora",
        };
        void Put(string key, string? value)
        {
            if (value is not null)
                ss[key] = value;
        }

        Put("ss_output_name", metadata.OutputName);
        Put("ss_sd_model_name", metadata.BaseModel is null ? null : ModelName(metadata.BaseModel));
        Put("ss_steps", metadata.TrainingSteps?.ToString(CultureInfo.InvariantCulture));
        Put("ss_max_train_steps", metadata.TrainingSteps?.ToString(CultureInfo.InvariantCulture));
        Put("ss_resolution", metadata.Resolution is { } r ? $"({r}, {r})" : null);
        Put("ss_learning_rate", metadata.LearningRate is { } lr ? PythonFloats.Repr(lr) : null);
        Put("ss_unet_lr", metadata.LearningRate is { } unetLr ? PythonFloats.Repr(unetLr) : null);
        Put("ss_num_train_images", metadata.ImageCount?.ToString(CultureInfo.InvariantCulture));
        foreach (var (key, value) in metadata.Extra)
            ss[key] = value;
        return ss;
    }

    /// <summary>A model's name as kohya's <c>ss_sd_model_name</c> holds it: a local folder's or file's name, or a hub id as given.</summary>
    internal static string ModelName(string model)
    {
        string trimmed = model.TrimEnd('/', '\\');
        if (Directory.Exists(trimmed) || File.Exists(trimmed) || Path.IsPathRooted(trimmed) || trimmed.StartsWith('.') || trimmed.Count(c => c == '/' || c == '\\') > 1)
            return Path.GetFileName(trimmed);
        return trimmed;
    }

    private static double MostCommon(IEnumerable<double> values) =>
        values.GroupBy(v => v).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;

    /// <summary>
    /// sd-webui-additional-networks' hashes: sha256 of the tensor data (everything after the header), and the first
    /// 8 hex digits of sha256 of the 64 KiB at offset 1 MiB of the file.
    /// </summary>
    internal static (string ModelHash, string LegacyHash) KohyaHashes(IReadOnlyList<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        string temporary = Path.Combine(Path.GetTempPath(), $"stablelora-hash-{Guid.NewGuid():N}.safetensors");
        try
        {
            SafetensorsWriter.Write(temporary, tensors, metadata);
            using var stream = File.OpenRead(temporary);
            Span<byte> lengthBytes = stackalloc byte[8];
            stream.ReadExactly(lengthBytes);
            stream.Position = 8 + (long)BitConverter.ToUInt64(lengthBytes);
            string model = Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();

            stream.Position = Math.Min(0x100000, stream.Length);
            var window = new byte[(int)Math.Min(0x10000, stream.Length - stream.Position)];
            stream.ReadExactly(window);
            string legacy = Convert.ToHexString(SHA256.HashData(window)).ToLowerInvariant()[..8];
            return (model, legacy);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    /// <summary>
    /// diffusers' PEFT layout: <c>unet.&lt;path&gt;.lora_A.weight</c> / <c>lora_B.weight</c> and <c>text_encoder.…</c>, with
    /// the LoRA config of each component in the <c>lora_adapter_metadata</c> JSON (rank, alpha, target modules, and
    /// patterns for modules whose rank or alpha differ).
    /// </summary>
    private static void WritePeft(string path, IReadOnlyList<LoraModuleWeights> modules)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var module in modules)
        {
            tensors.Add(new($"{LoraKeyNames.ToDiffusers(module.Key)}.lora_A.weight", module.Down.to(ScalarType.Float32)));
            tensors.Add(new($"{LoraKeyNames.ToDiffusers(module.Key)}.lora_B.weight", module.Up.to(ScalarType.Float32)));
        }

        var adapter = new SortedDictionary<string, object>(StringComparer.Ordinal);
        foreach (var component in modules.GroupBy(m => ModuleKeys.ComponentOf(m.Key)))
        {
            var members = component.ToList();
            double rank = MostCommon(members.Select(m => (double)m.Rank));
            double alpha = MostCommon(members.Select(m => m.Alpha));
            adapter[$"{component.Key}.r"] = (int)rank;
            adapter[$"{component.Key}.lora_alpha"] = alpha;
            adapter[$"{component.Key}.target_modules"] = members.Select(m => ModuleKeys.PathOf(m.Key)).ToArray();
            var ranks = members.Where(m => m.Rank != rank).ToDictionary(m => ModuleKeys.PathOf(m.Key), m => m.Rank);
            var alphas = members.Where(m => m.Alpha != alpha).ToDictionary(m => ModuleKeys.PathOf(m.Key), m => m.Alpha);
            if (ranks.Count > 0)
                adapter[$"{component.Key}.rank_pattern"] = ranks;
            if (alphas.Count > 0)
                adapter[$"{component.Key}.alpha_pattern"] = alphas;
        }

        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["lora_adapter_metadata"] = JsonSerializer.Serialize(adapter),
        };
        SafetensorsWriter.Write(path, tensors, metadata);
    }
}

/// <summary>Numbers as Python's <c>str()</c> writes them, for metadata that sd-scripts writes with <c>str(value)</c>.</summary>
internal static class PythonFloats
{
    /// <summary>Python's repr of a float: the shortest round-trip digits, ".0" for integral values, exponents as "1e-05".</summary>
    public static string Repr(double value)
    {
        if (double.IsNaN(value))
            return "nan";
        if (double.IsInfinity(value))
            return value > 0 ? "inf" : "-inf";
        string text = value.ToString("R", CultureInfo.InvariantCulture);
        if (text.Contains('E', StringComparison.Ordinal))
        {
            // .NET writes 1E-05; Python 1e-05 (an exponent of at least two digits, a sign).
            var parts = text.Split('E');
            int exponent = int.Parse(parts[1], CultureInfo.InvariantCulture);
            return $"{parts[0]}e{(exponent < 0 ? "-" : "+")}{Math.Abs(exponent):00}";
        }

        double magnitude = Math.Abs(value);
        if (magnitude != 0 && (magnitude < 1e-4 || magnitude >= 1e16))
        {
            string scientific = value.ToString("0.################e+00", CultureInfo.InvariantCulture);
            return scientific.Replace("e+", "e+", StringComparison.Ordinal);
        }

        return text.Contains('.', StringComparison.Ordinal) ? text : text + ".0";
    }

    /// <summary>A network-argument value as a user types it: "4" for an integral value, else Python's repr.</summary>
    public static string Argument(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < 1e15 ? ((long)value).ToString(CultureInfo.InvariantCulture) : Repr(value);
}
