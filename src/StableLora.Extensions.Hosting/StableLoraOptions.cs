namespace StableLora.Extensions.Hosting;

/// <summary>
/// How <c>AddStableLora</c> loads the application's <see cref="StableDiffusionGenerator"/>; bindable from configuration
/// (for example a <c>"StableLora"</c> section of appsettings.json: <c>{ "Model": "models/sd15", "Device": "cuda" }</c>).
/// </summary>
public sealed class StableLoraOptions
{
    /// <summary>The model: a diffusers folder, a single-file checkpoint or a hub id (<see cref="StableDiffusionGenerator.FromPretrained"/>). Required.</summary>
    public string? Model { get; set; }

    /// <summary>"auto" (CUDA when available), "cpu", "cuda" or "cuda:N".</summary>
    /// <value>The default value is "auto".</value>
    public string Device { get; set; } = "auto";

    /// <summary>The sampler; null keeps the model's own scheduler config.</summary>
    public SchedulerKind? Scheduler { get; set; }

    /// <summary>The dtype the weights are loaded in.</summary>
    /// <value>The default value is <see cref="ModelDType.Float32"/>.</value>
    public ModelDType DType { get; set; } = ModelDType.Float32;

    /// <summary>A weight-file variant such as "fp16", or null for the default files.</summary>
    public string? Variant { get; set; }

    /// <summary>Whether a hub id may be downloaded (<see cref="HubOptions.AllowDownloads"/>).</summary>
    public bool AllowDownloads { get; set; }

    /// <summary>Where hub files are cached (<see cref="HubOptions.CacheDirectory"/>); null for the Hugging Face default.</summary>
    public string? CacheDirectory { get; set; }
}
