namespace StableLora;

/// <summary>Training facts written into a LoRA file's metadata (kohya's <c>ss_*</c> keys).</summary>
public sealed record LoraExportMetadata
{
    /// <summary>The name the LoRA is known by (kohya's <c>ss_output_name</c>; AUTOMATIC1111 shows it as the alias).</summary>
    public string? OutputName { get; init; }

    /// <summary>The base model it was trained on; only its folder or file name (or a hub id) is written, never a local path.</summary>
    public string? BaseModel { get; init; }

    /// <summary>Optimizer steps taken.</summary>
    public long? TrainingSteps { get; init; }

    /// <summary>Training image size in pixels.</summary>
    public int? Resolution { get; init; }

    /// <summary>The peak learning rate.</summary>
    public double? LearningRate { get; init; }

    /// <summary>How many training images were used.</summary>
    public int? ImageCount { get; init; }

    /// <summary>kohya's <c>ss_base_model_version</c>, "sd_v1" for SD 1.x.</summary>
    public string BaseModelVersion { get; init; } = "sd_v1";

    /// <summary>Further <c>ss_*</c> keys, written as given (every value a string, as sd-scripts writes them).</summary>
    public IReadOnlyDictionary<string, string> Extra { get; init; } = new Dictionary<string, string>();
}
