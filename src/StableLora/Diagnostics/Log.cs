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

    [LoggerMessage(EventId = 14, Level = LogLevel.Information, Message = "Step {Step}: fp16 gradients overflowed; the update is skipped and the loss scale is now {Scale}")]
    public static partial void LossScaleOverflow(ILogger logger, long step, double scale);

    [LoggerMessage(EventId = 15, Level = LogLevel.Information, Message = "Saved checkpoint of step {Step} to {Path}")]
    public static partial void CheckpointSaved(ILogger logger, long step, string path);

    [LoggerMessage(EventId = 16, Level = LogLevel.Warning, Message = "Training cancelled after step {Step}; checkpoint saved to {Path}")]
    public static partial void TrainingCancelled(ILogger logger, long step, string path);

    [LoggerMessage(EventId = 17, Level = LogLevel.Information, Message = "Saved the LoRA to {Weights} and {Kohya}")]
    public static partial void FinalWeightsSaved(ILogger logger, string weights, string kohya);

    [LoggerMessage(EventId = 18, Level = LogLevel.Error, Message = "Training observer {Observer} threw; training continues")]
    public static partial void ObserverFailed(ILogger logger, string observer, Exception exception);

    [LoggerMessage(EventId = 20, Level = LogLevel.Warning, Message = "The {Which} is longer than the text encoder's {MaxLength} tokens: {Dropped} tokens were dropped")]
    public static partial void PromptTruncated(ILogger logger, string which, int dropped, int maxLength);

    [LoggerMessage(EventId = 19, Level = LogLevel.Information, Message = "Validation images of step {Step}: {Paths}")]
    public static partial void ValidationImagesSaved(ILogger logger, long step, string paths);
}
