using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;

namespace StableLora;

/// <summary>
/// Writes a diffusers pipeline folder whose UNet, VAE and text encoder have deterministic random weights (PyTorch's
/// default initialisation from one seed), built from config files. For demos, benchmarks and tests of the plumbing:
/// such a model draws noise, not pictures.
/// </summary>
public static class RandomPipeline
{
    /// <summary>
    /// Creates the pipeline. <paramref name="configDirectory"/> must hold <c>unet/config.json</c>, <c>vae/config.json</c>,
    /// <c>text_encoder/config.json</c>, <c>scheduler/scheduler_config.json</c> and <c>tokenizer/</c> (vocab.json,
    /// merges.txt); those are copied, and the weights are written as safetensors beside them.
    /// </summary>
    /// <param name="configDirectory">The folder of config files (a diffusers folder without weights).</param>
    /// <param name="outputDirectory">The pipeline folder to write (created; existing files are replaced).</param>
    /// <param name="seed">The same seed gives the same weights.</param>
    /// <exception cref="InvalidModelFileException">A config file is missing or invalid.</exception>
    public static void Create(string configDirectory, string outputDirectory, ulong seed)
    {
        var unetConfig = UNet2DConditionConfig.FromFile(Path.Combine(configDirectory, "unet", "config.json"));
        var vaeConfig = AutoencoderKLConfig.FromFile(Path.Combine(configDirectory, "vae", "config.json"));
        var textConfig = ClipTextConfig.FromFile(Path.Combine(configDirectory, "text_encoder", "config.json"));
        string tokenizer = Path.Combine(configDirectory, "tokenizer");
        string scheduler = Path.Combine(configDirectory, "scheduler", "scheduler_config.json");
        foreach (var required in new[] { Path.Combine(tokenizer, "vocab.json"), Path.Combine(tokenizer, "merges.txt"), scheduler })
        {
            if (!File.Exists(required))
                throw new InvalidModelFileException(required, null, "the file is missing from the config folder");
        }

        using (var unet = ModelInitializer.InitializeRandom(new UNet2DConditionModel(unetConfig, TensorSpec.CpuFloat32), seed))
            DiffusersFolderWriter.WriteComponent(Path.Combine(outputDirectory, "unet"), File.ReadAllText(Path.Combine(configDirectory, "unet", "config.json")), unet);
        using (var vae = ModelInitializer.InitializeRandom(new AutoencoderKL(vaeConfig, TensorSpec.CpuFloat32), seed + 1))
            DiffusersFolderWriter.WriteComponent(Path.Combine(outputDirectory, "vae"), File.ReadAllText(Path.Combine(configDirectory, "vae", "config.json")), vae);
        using (var text = ModelInitializer.InitializeRandom(new ClipTextModel(textConfig, TensorSpec.CpuFloat32), seed + 2))
            DiffusersFolderWriter.WriteComponent(Path.Combine(outputDirectory, "text_encoder"), File.ReadAllText(Path.Combine(configDirectory, "text_encoder", "config.json")), text, transformersNaming: true);

        CopyDirectory(tokenizer, Path.Combine(outputDirectory, "tokenizer"));
        Directory.CreateDirectory(Path.Combine(outputDirectory, "scheduler"));
        File.Copy(scheduler, Path.Combine(outputDirectory, "scheduler", "scheduler_config.json"), overwrite: true);
        DiffusersFolderWriter.WriteModelIndex(outputDirectory, Schedulers.SchedulerConfig.FromFile(scheduler).ClassName ?? "PNDMScheduler");
    }

    /// <summary>
    /// Creates the built-in demo model: a miniature pipeline with SD 1.5's layout (a UNet with cross-attention
    /// down/up blocks, a KL VAE with a factor-8 latent space, a CLIP text encoder with CLIP's real vocabulary) at a few
    /// hundred thousand parameters, whose configs ship inside the library, with deterministic random weights. It needs
    /// no file and no download, and trains or generates in seconds on a CPU; being random, it draws coloured noise.
    /// </summary>
    /// <param name="outputDirectory">The pipeline folder to write (created; existing files are replaced).</param>
    /// <param name="seed">The same seed gives the same weights (the CLI's demo uses 0).</param>
    public static void CreateTiny(string outputDirectory, ulong seed = 0)
    {
        string configs = Path.Combine(Path.GetTempPath(), $"stablelora-tiny-configs-{Guid.NewGuid():N}");
        try
        {
            foreach (var (component, file) in new[] { ("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"), ("scheduler", "scheduler_config.json") })
            {
                Directory.CreateDirectory(Path.Combine(configs, component));
                File.WriteAllText(Path.Combine(configs, component, file), Pipeline.Sd15Presets.TinyJson(component));
            }

            Pipeline.TokenizerFiles.BuiltIn.WriteTo(Path.Combine(configs, "tokenizer"));
            Create(configs, outputDirectory, seed);
        }
        finally
        {
            if (Directory.Exists(configs))
                Directory.Delete(configs, recursive: true);
        }
    }

    private static void CopyDirectory(string source, string target)
    {
        Directory.CreateDirectory(target);
        foreach (var file in Directory.GetFiles(source))
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)), overwrite: true);
    }
}
