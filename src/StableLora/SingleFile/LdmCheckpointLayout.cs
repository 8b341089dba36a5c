using StableLora.IO;
using StableLora.Pipeline;

namespace StableLora.SingleFile;

/// <summary>
/// What an original LDM/CompVis single-file checkpoint holds, sorted by component: UNet
/// (<c>model.diffusion_model.*</c>, and its EMA copy <c>model_ema.diffusion_model...</c> with the dots removed), VAE
/// (<c>first_stage_model.*</c>), text encoder (<c>cond_stage_model.transformer.*</c>), training-only extras (the DDPM
/// schedule buffers, EMA bookkeeping) and anything else. Checkpoints StableLora cannot load (SD 2.x, SDXL, a LoRA or a
/// lone component) are recognised here and refused with a message saying what they are.
/// </summary>
internal sealed class LdmCheckpointLayout
{
    public const string UnetPrefix = "model.diffusion_model.";
    public const string VaePrefix = "first_stage_model.";
    public const string TextEncoderPrefix = "cond_stage_model.transformer.";
    public const string EmaPrefix = "model_ema.";

    private static readonly HashSet<string> TrainingOnly = new(StringComparer.Ordinal)
    {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
        "model_ema.decay", "model_ema.num_updates",
    };

    private LdmCheckpointLayout(string path, List<TensorInfo> unet, List<TensorInfo> vae, List<TensorInfo> textEncoder,
        Dictionary<string, TensorInfo> ema, int trainingOnly, List<string> unknown)
    {
        Path = path;
        Unet = unet;
        Vae = vae;
        TextEncoder = textEncoder;
        Ema = ema;
        TrainingOnlyCount = trainingOnly;
        Unknown = unknown;
    }

    public string Path { get; }

    public IReadOnlyList<TensorInfo> Unet { get; }

    public IReadOnlyList<TensorInfo> Vae { get; }

    public IReadOnlyList<TensorInfo> TextEncoder { get; }

    /// <summary>The EMA UNet tensors by their flattened key.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Ema { get; }

    public int TrainingOnlyCount { get; }

    /// <summary>Tensors that belong to no component StableLora knows (skipped with a warning).</summary>
    public IReadOnlyList<string> Unknown { get; }

    /// <summary>The EMA key of a UNet tensor: <c>model.diffusion_model.a.b</c> becomes <c>model_ema.diffusion_modelab</c>.</summary>
    public static string EmaKey(string unetKey) => EmaPrefix + unetKey["model.".Length..].Replace(".", "", StringComparison.Ordinal);

    public static LdmCheckpointLayout Inspect(ITensorReader reader)
    {
        string path = reader.Path;
        var unet = new List<TensorInfo>();
        var vae = new List<TensorInfo>();
        var textEncoder = new List<TensorInfo>();
        var ema = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var unknown = new List<string>();
        int trainingOnly = 0;
        foreach (var info in reader.Tensors)
        {
            string key = info.Name;
            if (key.StartsWith(UnetPrefix, StringComparison.Ordinal))
                unet.Add(info);
            else if (key.StartsWith(VaePrefix, StringComparison.Ordinal))
                vae.Add(info);
            else if (key.StartsWith(TextEncoderPrefix, StringComparison.Ordinal))
                textEncoder.Add(info);
            else if (TrainingOnly.Contains(key))
                trainingOnly++;
            else if (key.StartsWith(EmaPrefix, StringComparison.Ordinal))
                ema[key] = info;
            else
                unknown.Add(key);
        }

        RefuseUnsupported(path, reader.Tensors, unet);
        if (vae.Count == 0)
            throw new InvalidModelFileException(path, VaePrefix, "the checkpoint has no VAE weights (first_stage_model.*); StableLora needs a complete SD 1.x checkpoint");
        if (textEncoder.Count == 0)
            throw new InvalidModelFileException(path, TextEncoderPrefix, "the checkpoint has no text encoder weights (cond_stage_model.transformer.*); StableLora needs a complete SD 1.x checkpoint");
        return new LdmCheckpointLayout(path, unet, vae, textEncoder, ema, trainingOnly, unknown);
    }

    private static void RefuseUnsupported(string path, IReadOnlyList<TensorInfo> all, List<TensorInfo> unet)
    {
        if (all.Any(t => t.Name.StartsWith("conditioner.embedders.", StringComparison.Ordinal)))
            throw new InvalidModelFileException(path, "conditioner.embedders", "this is an SDXL checkpoint; StableLora supports Stable Diffusion 1.x");
        var crossAttention = unet.FirstOrDefault(t => t.Name.EndsWith(".attn2.to_k.weight", StringComparison.Ordinal) && t.Shape.Length == 2);
        if (all.Any(t => t.Name.StartsWith("cond_stage_model.model.", StringComparison.Ordinal)) || crossAttention?.Shape[1] == 1024)
            throw new InvalidModelFileException(path, crossAttention?.Name ?? "cond_stage_model.model",
                "this is a Stable Diffusion 2.x checkpoint (1024-dim cross-attention, OpenCLIP text encoder), which StableLora does not load; it supports SD 1.x (768-dim CLIP ViT-L/14)");
        if (unet.Count > 0)
            return;
        string first = all.Count > 0 ? all[0].Name : "";
        string what = all.Any(t => t.Name.StartsWith("lora_", StringComparison.Ordinal) || t.Name.Contains(".lora_", StringComparison.Ordinal) || t.Name.Contains(".lora.", StringComparison.Ordinal))
            ? "this is a LoRA, not a base model; load it with WithLora on top of a base model"
            : all.Any(t => t.Name.StartsWith("down_blocks.", StringComparison.Ordinal))
                ? "this is a diffusers-format UNet weights file, not a single-file checkpoint; name the pipeline folder it belongs to"
                : all.Any(t => t.Name.StartsWith("encoder.down.", StringComparison.Ordinal) || t.Name.StartsWith("decoder.up.", StringComparison.Ordinal))
                    ? "this is a VAE checkpoint on its own, not a complete model"
                    : "it has no UNet weights (model.diffusion_model.*), so it is not an SD 1.x single-file checkpoint";
        throw new InvalidModelFileException(path, first.Length == 0 ? null : first, what);
    }
}
