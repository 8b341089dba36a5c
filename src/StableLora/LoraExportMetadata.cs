namespace StableLora;

/// <summary>Training facts written into a LoRA file's metadata (kohya's <c>ss_*</c> keys).</summary>
/// <param name="OutputName">The name the LoRA is known by (kohya's <c>ss_output_name</c>; AUTOMATIC1111 shows it as the alias).</param>
/// <param name="BaseModel">The base model it was trained on; only its folder or file name (or a hub id) is written, never a local path.</param>
/// <param name="TrainingSteps">Optimizer steps taken.</param>
/// <param name="Resolution">Training image size in pixels.</param>
/// <param name="LearningRate">The peak learning rate.</param>
/// <param name="ImageCount">How many training images were used.</param>
/// <param name="BaseModelVersion">kohya's <c>ss_base_model_version</c>, "sd_v1" for SD 1.x.</param>
public sealed record LoraExportMetadata(
    string? OutputName = null,
    string? BaseModel = null,
    long? TrainingSteps = null,
    int? Resolution = null,
    double? LearningRate = null,
    int? ImageCount = null,
    string BaseModelVersion = "sd_v1")
{
    /// <summary>Further <c>ss_*</c> keys, written as given (every value a string, as sd-scripts writes them).</summary>
    public IReadOnlyDictionary<string, string> Extra { get; init; } = new Dictionary<string, string>();
}
