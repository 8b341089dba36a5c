using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.IO;

/// <summary>Writes LoRA layers in each <see cref="LoraFileFormat"/>, atomically.</summary>
internal static class LoraFileWriter
{
    public static void Write(string path, IReadOnlyList<LoraModuleWeights> modules, LoraFileFormat format, LoraExportMetadata? metadata = null)
    {
        if (modules.Count == 0)
            throw new ArgumentException("there are no LoRA layers to write", nameof(modules));
        using var scope = NewDisposeScope();
        switch (format)
        {
            case LoraFileFormat.AttnProcs:
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

    /// <summary>
    /// The seed's state dict. The format has no alpha, so a layer whose alpha differs from its rank has alpha / rank
    /// folded into its <c>up</c> weight: the seed's processors (scale 1) then compute the same output.
    /// </summary>
    public static List<KeyValuePair<string, Tensor>> AttnProcsStateDict(IReadOnlyList<LoraModuleWeights> modules)
    {
        var entries = new List<KeyValuePair<string, Tensor>>();
        foreach (var module in modules)
        {
            var (processor, projection) = LoraModulePaths.Split(module.ModulePath);
            string prefix = $"{processor}.{LoraModulePaths.ProcessorAttribute[projection]}";
            double scale = module.Alpha / module.Rank;
            entries.Add(new($"{prefix}.down.weight", module.Down.to(ScalarType.Float32)));
            entries.Add(new($"{prefix}.up.weight", scale == 1.0 ? module.Up.to(ScalarType.Float32) : module.Up.to(ScalarType.Float32).Times(scale)));
        }

        return entries;
    }

    private static void WriteKohya(string path, IReadOnlyList<LoraModuleWeights> modules, LoraExportMetadata metadata)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var module in modules.OrderBy(m => LoraModulePaths.ToKohya(m.ModulePath), StringComparer.Ordinal))
        {
            string name = LoraModulePaths.ToKohya(module.ModulePath);
            tensors.Add(new($"{name}.alpha", tensor((float)module.Alpha)));
            tensors.Add(new($"{name}.lora_down.weight", module.Down.to(ScalarType.Float32)));
            tensors.Add(new($"{name}.lora_up.weight", module.Up.to(ScalarType.Float32)));
        }

        var ranks = modules.Select(m => m.Rank).Distinct().ToList();
        var alphas = modules.Select(m => m.Alpha).Distinct().ToList();
        var ss = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["ss_network_module"] = "networks.lora",
            ["ss_network_dim"] = ranks.Count == 1 ? ranks[0].ToString(CultureInfo.InvariantCulture) : "Dynamic",
            ["ss_network_alpha"] = alphas.Count == 1 ? alphas[0].ToString("0.0##########", CultureInfo.InvariantCulture) : "Dynamic",
            ["ss_base_model_version"] = metadata.BaseModelVersion,
            ["ss_v2"] = metadata.BaseModelVersion.StartsWith("sd_v2", StringComparison.Ordinal) ? "True" : "False",
            ["ss_network_args"] = "{}",
            ["ss_training_comment"] = "trained with StableLora (attention-processor LoRA on to_q/to_k/to_v/to_out.0)",
        };
        void Put(string key, string? value)
        {
            if (value is not null)
                ss[key] = value;
        }

        Put("ss_output_name", metadata.OutputName);
        Put("ss_sd_model_name", metadata.BaseModel);
        Put("ss_steps", metadata.TrainingSteps?.ToString(CultureInfo.InvariantCulture));
        Put("ss_max_train_steps", metadata.TrainingSteps?.ToString(CultureInfo.InvariantCulture));
        Put("ss_resolution", metadata.Resolution is { } r ? $"({r}, {r})" : null);
        Put("ss_learning_rate", metadata.LearningRate?.ToString("R", CultureInfo.InvariantCulture));
        Put("ss_unet_lr", metadata.LearningRate?.ToString("R", CultureInfo.InvariantCulture));
        Put("ss_num_train_images", metadata.ImageCount?.ToString(CultureInfo.InvariantCulture));

        // kohya hashes a serialisation that carries only the ss_* metadata, then stores the hashes beside it.
        var (modelHash, legacyHash) = KohyaHashes(tensors, ss);
        ss["sshs_model_hash"] = modelHash;
        ss["sshs_legacy_hash"] = legacyHash;
        SafetensorsWriter.Write(path, tensors, ss);
    }

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

    private static void WritePeft(string path, IReadOnlyList<LoraModuleWeights> modules)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var module in modules)
        {
            tensors.Add(new($"unet.{module.ModulePath}.lora_A.weight", module.Down.to(ScalarType.Float32)));
            tensors.Add(new($"unet.{module.ModulePath}.lora_B.weight", module.Up.to(ScalarType.Float32)));
        }

        var ranks = modules.Select(m => m.Rank).Distinct().ToList();
        var alphas = modules.Select(m => m.Alpha).Distinct().ToList();
        var adapter = new Dictionary<string, object>
        {
            ["unet.r"] = ranks[0],
            ["unet.lora_alpha"] = alphas[0],
            ["unet.target_modules"] = modules.Select(m => LoraModulePaths.Split(m.ModulePath).Projection).Distinct().OrderBy(p => p, StringComparer.Ordinal).ToArray(),
        };
        if (ranks.Count > 1)
            adapter["unet.rank_pattern"] = modules.ToDictionary(m => m.ModulePath, m => m.Rank);
        if (alphas.Count > 1)
            adapter["unet.alpha_pattern"] = modules.ToDictionary(m => m.ModulePath, m => m.Alpha);
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["lora_adapter_metadata"] = JsonSerializer.Serialize(adapter),
        };
        SafetensorsWriter.Write(path, tensors, metadata);
    }
}
