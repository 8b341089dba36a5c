using System.Text.Json;
using StableLora.IO;
using StableLora.Layers;
using StableLora.Pipeline;
using static TorchSharp.torch;

namespace StableLora.SingleFile;

/// <summary>
/// Writes a loaded pipeline back out, tensor by tensor (no second copy of the weights in memory): as a diffusers
/// folder (<c>save_pretrained</c>'s layout, safetensors weights) or as an original LDM single-file
/// <c>.safetensors</c> whose keys are the ones the single-file loader reads.
/// </summary>
internal static class PipelineWriter
{
    private static readonly Dictionary<string, string> SafetensorsMetadata = new() { ["format"] = "pt" };

    /// <summary>Writes the single file; floating-point weights are converted to <paramref name="dtype"/> when one is given.</summary>
    public static void WriteSingleFile(StableDiffusionModel model, string path, ScalarType? dtype = null)
    {
        var entries = new List<SafetensorsEntry>();
        var unetMap = LdmKeyMap.ForUnet(model.Unet.Config);
        foreach (var (key, tensor) in StateDicts.Ordered(model.Unet))
            entries.Add(Entry(LdmCheckpointLayout.UnetPrefix + LdmName(unetMap, key), tensor, dtype));

        var vaeMap = LdmKeyMap.ForVae(model.Vae.Config);
        foreach (var (key, tensor) in StateDicts.Ordered(model.Vae))
        {
            string ldmKey = LdmName(vaeMap, key);
            // LDM's VAE attention projections are 1x1 convolutions where diffusers has Linear layers.
            long[]? shape = LdmKeyMap.IsVaeConvAttentionWeight(ldmKey) && tensor.dim() == 2 ? new[] { tensor.shape[0], tensor.shape[1], 1L, 1L } : null;
            entries.Add(Entry(LdmCheckpointLayout.VaePrefix + ldmKey, tensor, dtype, shape));
        }

        foreach (var (key, tensor) in StateDicts.Ordered(model.TextEncoder))
            entries.Add(Entry(LdmCheckpointLayout.TextEncoderPrefix + key, tensor, dtype));

        SafetensorsWriter.Write(path, entries, SafetensorsMetadata);
    }

    /// <summary>Writes <c>model_index.json</c> and each component's config and weights, the tokenizer's files and the scheduler config.</summary>
    public static void WriteDiffusersFolder(StableDiffusionModel model, string directory, ScalarType? dtype = null)
    {
        var configs = model.Configs ?? throw new InvalidOperationException("the model was assembled without its configs, so it cannot be written as a pipeline folder");
        WriteComponent(Path.Combine(directory, "unet"), configs.UnetJson, model.Unet, "diffusion_pytorch_model.safetensors", dtype);
        WriteComponent(Path.Combine(directory, "vae"), configs.VaeJson, model.Vae, "diffusion_pytorch_model.safetensors", dtype);
        WriteComponent(Path.Combine(directory, "text_encoder"), configs.TextEncoderJson, model.TextEncoder, "model.safetensors", dtype);
        configs.Tokenizer.WriteTo(Path.Combine(directory, "tokenizer"));
        AtomicFile.WriteAllText(Path.Combine(directory, "scheduler", "scheduler_config.json"), configs.SchedulerJson);
        DiffusersFolderWriter.WriteModelIndex(directory, SchedulerClass(configs.SchedulerJson));
    }

    private static void WriteComponent(string directory, string configJson, nn.Module module, string weightsFile, ScalarType? dtype)
    {
        Directory.CreateDirectory(directory);
        AtomicFile.WriteAllText(Path.Combine(directory, "config.json"), configJson);
        var entries = StateDicts.Ordered(module).Select(p => Entry(p.Key, p.Value, dtype)).ToList();
        SafetensorsWriter.Write(Path.Combine(directory, weightsFile), entries, SafetensorsMetadata);
    }

    private static SafetensorsEntry Entry(string name, Tensor tensor, ScalarType? dtype, long[]? shape = null)
    {
        var target = dtype is { } d && TensorDTypes.IsFloatingPoint(tensor.dtype) ? d : tensor.dtype;
        return new SafetensorsEntry(name, target, shape ?? tensor.shape, () =>
        {
            var produced = tensor.dtype == target ? tensor : tensor.to(target);
            return shape is null ? produced : produced.reshape(shape);
        });
    }

    private static string LdmName(LdmKeyMap map, string key) =>
        map.ToLdm(key) ?? throw new InvalidOperationException($"the LDM layout has no name for '{key}'");

    private static string SchedulerClass(string json)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.TryGetProperty("_class_name", out var name) && name.ValueKind == JsonValueKind.String ? name.GetString()! : "PNDMScheduler";
    }
}
