using StableLora.IO;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>Writes models in the diffusers folder layout, as <c>save_pretrained(safe_serialization=True)</c> does.</summary>
internal static class DiffusersFolderWriter
{
    /// <summary>Writes <c>config.json</c> and the weights (<c>diffusion_pytorch_model.safetensors</c>, or <c>model.safetensors</c> for transformers models).</summary>
    public static void WriteComponent(string directory, string configJson, nn.Module model, bool transformersNaming = false) =>
        WriteComponent(directory, configJson, StateDicts.Ordered(model), transformersNaming);

    /// <summary>Writes <c>config.json</c> and the given tensors as the component's weights (for weights stored in another dtype than the model's).</summary>
    public static void WriteComponent(string directory, string configJson, IEnumerable<KeyValuePair<string, Tensor>> weights, bool transformersNaming = false)
    {
        Directory.CreateDirectory(directory);
        AtomicFile.WriteAllText(Path.Combine(directory, "config.json"), configJson);
        string file = transformersNaming ? "model.safetensors" : "diffusion_pytorch_model.safetensors";
        SafetensorsWriter.Write(Path.Combine(directory, file), weights, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>Writes a <c>model_index.json</c> for an SD text-to-image pipeline without safety checker.</summary>
    public static void WriteModelIndex(string directory, string schedulerClass = "PNDMScheduler")
    {
        Directory.CreateDirectory(directory);
        AtomicFile.WriteAllText(Path.Combine(directory, ModelIndex.FileName), $$"""
            {
              "_class_name": "StableDiffusionPipeline",
              "_diffusers_version": "0.21.4",
              "feature_extractor": [null, null],
              "requires_safety_checker": false,
              "safety_checker": [null, null],
              "scheduler": ["diffusers", "{{schedulerClass}}"],
              "text_encoder": ["transformers", "CLIPTextModel"],
              "tokenizer": ["transformers", "CLIPTokenizer"],
              "unet": ["diffusers", "UNet2DConditionModel"],
              "vae": ["diffusers", "AutoencoderKL"]
            }
            """);
    }
}
