namespace StableLora;

/// <summary>Training stopped because a step could not be completed; the last checkpoint on disk is intact.</summary>
public sealed class TrainingFailedException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="step">The step (1-based) that failed.</param>
    /// <param name="imageNames">The images of that step.</param>
    /// <param name="reason">What went wrong.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public TrainingFailedException(long step, IReadOnlyList<string> imageNames, string reason, Exception? innerException = null)
        : base($"training step {step} failed: {reason} (images: {string.Join(", ", imageNames)})", innerException)
    {
        Step = step;
        ImageNames = imageNames;
    }

    /// <summary>The step that failed.</summary>
    public long Step { get; }

    /// <summary>The images of that step.</summary>
    public IReadOnlyList<string> ImageNames { get; }
}
