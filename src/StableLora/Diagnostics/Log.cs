using Microsoft.Extensions.Logging;

namespace StableLora.Diagnostics;

/// <summary>Every message StableLora logs, with stable event ids.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Loaded {Component} from {Path} as {DType} on {Device}")]
    public static partial void ComponentLoaded(ILogger logger, string component, string path, string dtype, string device);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "No '{Variant}' weights in {Directory}; loading {File} instead")]
    public static partial void VariantMissing(ILogger logger, string variant, string directory, string file);

    [LoggerMessage(EventId = 10, Level = LogLevel.Warning, Message = "Skipping unreadable image {Image}: {Reason}")]
    public static partial void ImageSkipped(ILogger logger, string image, string reason);

    [LoggerMessage(EventId = 11, Level = LogLevel.Information, Message = "Dataset: {Usable} usable images ({Skipped} skipped)")]
    public static partial void DatasetReady(ILogger logger, int usable, int skipped);

    [LoggerMessage(EventId = 12, Level = LogLevel.Information, Message = "Training on {Images} images on {Device} for {MaxSteps} steps, starting at step {StartStep}")]
    public static partial void TrainingStarting(ILogger logger, int images, string device, long maxSteps, long startStep);

    [LoggerMessage(EventId = 13, Level = LogLevel.Warning, Message = "Step {Step}: the loss is not finite for images {Images}; the update is skipped")]
    public static partial void NonFiniteLoss(ILogger logger, long step, string images);

    [LoggerMessage(EventId = 23, Level = LogLevel.Warning, Message = "Step {Step}: a gradient is not finite for images {Images}; the update is skipped")]
    public static partial void NonFiniteGradients(ILogger logger, long step, string images);

    [LoggerMessage(EventId = 14, Level = LogLevel.Information, Message = "Step {Step}: fp16 gradients overflowed; the update is skipped and the loss scale is now {Scale}")]
    public static partial void LossScaleOverflow(ILogger logger, long step, double scale);

    [LoggerMessage(EventId = 15, Level = LogLevel.Information, Message = "Saved checkpoint of step {Step} to {Path}")]
    public static partial void CheckpointSaved(ILogger logger, long step, string path);

    [LoggerMessage(EventId = 16, Level = LogLevel.Warning, Message = "Training cancelled after step {Step}; checkpoint saved to {Path}")]
    public static partial void TrainingCancelled(ILogger logger, long step, string path);

    [LoggerMessage(EventId = 17, Level = LogLevel.Information, Message = "Saved the LoRA to {Files}")]
    public static partial void FinalWeightsSaved(ILogger logger, string files);

    [LoggerMessage(EventId = 18, Level = LogLevel.Error, Message = "Training observer {Observer} threw; the run stops after saving a checkpoint")]
    public static partial void ObserverFailed(ILogger logger, string observer, Exception exception);

    [LoggerMessage(EventId = 21, Level = LogLevel.Warning, Message = "Resuming from the latest checkpoint was asked for, but {Directory} has none yet; starting a new run")]
    public static partial void NoCheckpointYet(ILogger logger, string directory);

    [LoggerMessage(EventId = 22, Level = LogLevel.Error, Message = "Saving the checkpoint of step {Step} failed; the checkpoints already written are intact ({Latest})")]
    public static partial void CheckpointFailed(ILogger logger, long step, string latest, Exception exception);

    [LoggerMessage(EventId = 20, Level = LogLevel.Warning, Message = "The {Which} is longer than the text encoder's {MaxLength} tokens: {Dropped} tokens were dropped")]
    public static partial void PromptTruncated(ILogger logger, string which, int dropped, int maxLength);

    [LoggerMessage(EventId = 19, Level = LogLevel.Information, Message = "Validation images of step {Step}: {Paths}")]
    public static partial void ValidationImagesSaved(ILogger logger, long step, string paths);
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Using {Model} from the Hugging Face cache: {Folder}")]
    public static partial void HubModelFromCache(ILogger logger, string model, string folder);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Resolved {Model} to commit {Commit}: {Folder}")]
    public static partial void HubModelResolved(ILogger logger, string model, string commit, string folder);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "The hub could not be asked about {Model} ({Reason}); using the cached snapshot {Folder}")]
    public static partial void HubUsingCacheAfterError(ILogger logger, string model, string folder, string reason);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "Downloading {File} of {Repo} ({Bytes} bytes; -1: unknown)")]
    public static partial void HubDownloadStarting(ILogger logger, string repo, string file, long bytes);

    [LoggerMessage(EventId = 104, Level = LogLevel.Information, Message = "Resuming the download of {File} of {Repo} after {Bytes} bytes")]
    public static partial void HubDownloadResuming(ILogger logger, string repo, string file, long bytes);

    [LoggerMessage(EventId = 105, Level = LogLevel.Warning, Message = "The download of {File} of {Repo} broke off after {Bytes} bytes ({Reason}); resuming")]
    public static partial void HubDownloadRetry(ILogger logger, string repo, string file, long bytes, string reason);

    [LoggerMessage(EventId = 106, Level = LogLevel.Warning, Message = "The server ignored the range request for {File} of {Repo}; downloading it from the start")]
    public static partial void HubRangeIgnored(ILogger logger, string repo, string file);

    [LoggerMessage(EventId = 107, Level = LogLevel.Information, Message = "Downloaded and verified {File} of {Repo} into {Blob}")]
    public static partial void HubFileDownloaded(ILogger logger, string repo, string file, string blob);

    [LoggerMessage(EventId = 108, Level = LogLevel.Information, Message = "Waiting for another process downloading {File} of {Repo} (lock {Lock})")]
    public static partial void HubWaitingForLock(ILogger logger, string repo, string file, string @lock);

    [LoggerMessage(EventId = 109, Level = LogLevel.Debug, Message = "{File} of {Repo} is already in the cache's blobs; linking it")]
    public static partial void HubBlobReused(ILogger logger, string repo, string file);

    [LoggerMessage(EventId = 110, Level = LogLevel.Information, Message = "Loading single-file checkpoint {Path} with the {Architecture}")]
    public static partial void SingleFileLoading(ILogger logger, string path, string architecture);

    [LoggerMessage(EventId = 111, Level = LogLevel.Warning, Message = "EMA weights were asked for, but {Path} has none (model_ema.*); loading its regular UNet weights")]
    public static partial void SingleFileEmaMissing(ILogger logger, string path);

    [LoggerMessage(EventId = 112, Level = LogLevel.Information, Message = "{Path} holds EMA and regular UNet weights; loading the regular ones (SingleFileOptions.UseEmaWeights selects the EMA ones)")]
    public static partial void SingleFileEmaNotUsed(ILogger logger, string path);

    [LoggerMessage(EventId = 113, Level = LogLevel.Information, Message = "Loading the EMA UNet weights of {Path}")]
    public static partial void SingleFileEmaUsed(ILogger logger, string path);

    [LoggerMessage(EventId = 114, Level = LogLevel.Debug, Message = "Skipped {Count} training-only entries of {Path} (noise schedule buffers, EMA bookkeeping)")]
    public static partial void SingleFileExtrasSkipped(ILogger logger, string path, int count);

    [LoggerMessage(EventId = 115, Level = LogLevel.Warning, Message = "Skipped {Count} tensors of {Path} that belong to no SD component, e.g. {Examples}")]
    public static partial void SingleFileUnknownSkipped(ILogger logger, string path, int count, string examples);

    [LoggerMessage(EventId = 116, Level = LogLevel.Information, Message = "{Folder} has no {Component} folder; using the built-in SD 1.5 {Component}")]
    public static partial void SingleFileDefaultComponent(ILogger logger, string folder, string component);

    [LoggerMessage(EventId = 117, Level = LogLevel.Information, Message = "Wrote {Model} to {Path}")]
    public static partial void ModelExported(ILogger logger, string model, string path);

    [LoggerMessage(EventId = 30, Level = LogLevel.Warning, Message = "{Count} modules of {Path} match no layer of the model and were not loaded (lora key not loaded): {Keys}")]
    public static partial void LoraKeysSkipped(ILogger logger, int count, string path, string keys);

    [LoggerMessage(EventId = 31, Level = LogLevel.Information, Message = "No lora_weights.pt is written: the diffusers attention-processor format (lora_weights.pt) holds only UNet attention LoRA, and this network also adapts {What}; the LoRA is {Main}")]
    public static partial void SeedFormatNotWritten(ILogger logger, string what, string main);

    [LoggerMessage(EventId = 33, Level = LogLevel.Information, Message = "The default warm-up of {Default} steps is longer than the run; it is {Steps} steps (set WarmupSteps to choose)")]
    public static partial void WarmupShortened(ILogger logger, int @default, int steps);

    [LoggerMessage(EventId = 32, Level = LogLevel.Warning, Message = "Removed {Path} from an earlier run: this run's network cannot be written in the diffusers attention-processor format, and the old file must not be mistaken for the new LoRA")]
    public static partial void StaleSeedFileRemoved(ILogger logger, string path);

    [LoggerMessage(EventId = 150, Level = LogLevel.Warning, Message = "Prodigy's learning rate scales the step size it estimates; its authors advise 1.0 (this run's is {LearningRate}). Change d_coef rather than the learning rate to tune it")]
    public static partial void ProdigyLearningRate(ILogger logger, double learningRate);

    [LoggerMessage(EventId = 151, Level = LogLevel.Information, Message = "Adafactor computes its own learning rate (relative_step=True): the learning rate {LearningRate} and its schedule are not used; pass relative_step=False to use them")]
    public static partial void AdafactorOwnLearningRate(ILogger logger, double learningRate);

    [LoggerMessage(EventId = 200, Level = LogLevel.Debug, Message = "libtorch's CPU kernels are right on {Cpu} (checked in {Milliseconds:F0} ms)")]
    public static partial void CpuKernelsRight(ILogger logger, string cpu, double milliseconds);

    [LoggerMessage(EventId = 201, Level = LogLevel.Warning, Message = "libtorch computes wrong numbers on this CPU, {Cpu}: {Defects}. StableLora {Action}; the check now passes. See docs/troubleshooting.md")]
    public static partial void CpuKernelsWrong(ILogger logger, string cpu, string defects, string action);

    [LoggerMessage(EventId = 202, Level = LogLevel.Error, Message = "libtorch computes wrong numbers on this CPU, {Cpu}: {Defects}. StableLora {Action}, but results are still wrong: {Remaining}. See docs/troubleshooting.md")]
    public static partial void CpuKernelsStillWrong(ILogger logger, string cpu, string defects, string action, string remaining);

    [LoggerMessage(EventId = 203, Level = LogLevel.Information, Message = "CPU kernel fallback forced: StableLora {Action}")]
    public static partial void CpuKernelFallbackForced(ILogger logger, string action);

    [LoggerMessage(EventId = 40, Level = LogLevel.Information, Message = "Latent cache: {Reused} image latents read from disk, {Encoded} encoded and written")]
    public static partial void LatentCacheSummary(ILogger logger, int reused, int encoded);

    [LoggerMessage(EventId = 41, Level = LogLevel.Warning, Message = "Latent cache: cannot write {Path} ({Reason}); latents are kept in memory only for the rest of this run")]
    public static partial void LatentCacheNotWritten(ILogger logger, string path, string reason);

    [LoggerMessage(EventId = 42, Level = LogLevel.Warning, Message = "Resuming from {Checkpoint} with options that differ from the run that wrote it: {Changes}")]
    public static partial void ResumedWithChangedOptions(ILogger logger, string checkpoint, string changes);
}
