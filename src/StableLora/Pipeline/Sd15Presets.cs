using System.Reflection;
using StableLora.Configuration;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;

namespace StableLora.Pipeline;

/// <summary>
/// The configs of Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5, written out in full by diffusers 0.21.4 and
/// transformers 4.30), shipped as embedded resources for models that come without config files and for benchmarks.
/// </summary>
internal static class Sd15Presets
{
    public static UNet2DConditionConfig Unet => UNet2DConditionConfig.FromReader(Reader("unet"));

    public static AutoencoderKLConfig Vae => AutoencoderKLConfig.FromReader(Reader("vae"));

    public static ClipTextConfig TextEncoder => ClipTextConfig.FromReader(Reader("text_encoder"));

    /// <summary>The raw JSON of one preset: unet, vae, text_encoder or scheduler.</summary>
    public static string Json(string component)
    {
        string name = $"StableLora.sd15/{component}.json";
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
                           ?? throw new InvalidOperationException($"embedded resource {name} is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>The raw JSON of one config of the built-in tiny demo model (<see cref="RandomPipeline.CreateTiny"/>): unet, vae, text_encoder or scheduler.</summary>
    public static string TinyJson(string component)
    {
        string name = $"StableLora.tiny/{component}.json";
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
                           ?? throw new InvalidOperationException($"embedded resource {name} is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    private static ConfigReader Reader(string component) => ConfigReader.FromJson(Json(component), $"built-in SD 1.5 {component} config");
}
