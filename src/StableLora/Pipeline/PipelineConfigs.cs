namespace StableLora.Pipeline;

/// <summary>
/// The configs that describe a pipeline besides its weights, kept with a loaded model so it can be written back
/// (<see cref="DiffusersFolderWriter"/>): the diffusers <c>config.json</c> text of each model and the scheduler, the
/// tokenizer's files, and what each came from (a file path, or words) for messages.
/// </summary>
internal sealed record PipelineConfigs(
    string UnetJson, string UnetSource,
    string VaeJson, string VaeSource,
    string TextEncoderJson, string TextEncoderSource,
    string SchedulerJson, string SchedulerSource,
    TokenizerFiles Tokenizer,
    string Description)
{
    /// <summary>SD 1.5's configs and tokenizer, built into StableLora.</summary>
    public static PipelineConfigs Sd15 => new(
        Sd15Presets.Json("unet"), "built-in SD 1.5 unet config",
        Sd15Presets.Json("vae"), "built-in SD 1.5 vae config",
        Sd15Presets.Json("text_encoder"), "built-in SD 1.5 text_encoder config",
        Sd15Presets.Json("scheduler"), "built-in SD 1.5 scheduler config",
        TokenizerFiles.BuiltIn,
        "built-in SD 1.5 configs");

    /// <summary>The configs of a diffusers pipeline folder (or of a folder of configs only).</summary>
    /// <param name="directory">The folder.</param>
    /// <param name="defaultMissing">Use SD 1.5's scheduler and tokenizer where the folder has none (a config-only folder); else they are required.</param>
    /// <param name="onDefault">Told the component name when a default stands in.</param>
    public static PipelineConfigs FromFolder(string directory, bool defaultMissing = false, Action<string>? onDefault = null)
    {
        string Read(string component, string file)
        {
            string path = Path.Combine(directory, component, file);
            if (!File.Exists(path))
                throw new InvalidModelFileException(path, null, $"{component}/{file} is missing from {directory}");
            return File.ReadAllText(path);
        }

        string schedulerPath = Path.Combine(directory, "scheduler", "scheduler_config.json");
        string tokenizerDirectory = Path.Combine(directory, "tokenizer");
        bool hasScheduler = File.Exists(schedulerPath) || !defaultMissing;
        bool hasTokenizer = File.Exists(Path.Combine(tokenizerDirectory, "vocab.json")) || !defaultMissing;
        if (!hasScheduler)
            onDefault?.Invoke("scheduler");
        if (!hasTokenizer)
            onDefault?.Invoke("tokenizer");
        return new PipelineConfigs(
            Read("unet", "config.json"), Path.Combine(directory, "unet", "config.json"),
            Read("vae", "config.json"), Path.Combine(directory, "vae", "config.json"),
            Read("text_encoder", "config.json"), Path.Combine(directory, "text_encoder", "config.json"),
            hasScheduler ? Read("scheduler", "scheduler_config.json") : Sd15Presets.Json("scheduler"),
            hasScheduler ? schedulerPath : "built-in SD 1.5 scheduler config",
            hasTokenizer ? TokenizerFiles.Folder(tokenizerDirectory) : TokenizerFiles.BuiltIn,
            $"configs of {directory}");
    }
}
