namespace StableLora;

/// <summary>Training stopped because a step could not be completed; the last checkpoint on disk is intact.</summary>
public sealed class TrainingFailedException : StableLoraException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="step">The step (1-based) that failed.</param>
    /// <param name="imageNames">The images of that step.</param>
    /// <param name="reason">What went wrong.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public TrainingFailedException(long step, IReadOnlyList<string> imageNames, string reason, Exception? innerException = null)
        : this(step, imageNames, reason, null, innerException)
    {
    }

    /// <summary>Creates the exception naming the last checkpoint that was written.</summary>
    /// <param name="step">The step (1-based) that failed.</param>
    /// <param name="imageNames">The images of that step.</param>
    /// <param name="reason">What went wrong.</param>
    /// <param name="lastCheckpoint">The newest complete checkpoint folder, or <see langword="null"/> when none was written.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public TrainingFailedException(long step, IReadOnlyList<string> imageNames, string reason, string? lastCheckpoint, Exception? innerException = null)
        : base(Compose(step, imageNames, reason, lastCheckpoint), innerException)
    {
        Step = step;
        ImageNames = imageNames;
        LastCheckpoint = lastCheckpoint;
    }

    /// <summary>The step that failed.</summary>
    public long Step { get; }

    /// <summary>The images of that step.</summary>
    public IReadOnlyList<string> ImageNames { get; }

    /// <summary>The newest complete checkpoint folder, or <see langword="null"/> when none was written (or it is not known).</summary>
    public string? LastCheckpoint { get; }

    private static string Compose(long step, IReadOnlyList<string> imageNames, string reason, string? lastCheckpoint)
    {
        string images = imageNames.Count > 0 ? $" (images: {string.Join(", ", imageNames)})" : "";
        string checkpoint = lastCheckpoint is null ? "" : $"; the last good checkpoint is {lastCheckpoint}";
        return $"training step {step} failed: {reason}{images}{checkpoint}";
    }
}
