namespace StableLora;

/// <summary>
/// Training could not write a checkpoint or the final LoRA (a full disk, a read-only or vanished output folder).
/// Nothing already written is harmed: every checkpoint saved before stays complete and <see cref="LatestCheckpoint"/>
/// names the newest, from which the run can be resumed once there is room.
/// </summary>
public sealed class OutputSaveException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="path">The folder or file that could not be written.</param>
    /// <param name="step">The training step whose state was being saved.</param>
    /// <param name="latestCheckpoint">The newest complete checkpoint, or null if there is none.</param>
    /// <param name="innerException">The file-system error.</param>
    public OutputSaveException(string path, long step, string? latestCheckpoint, Exception innerException)
        : base($"{path}: could not save step {step}: {innerException.Message}; "
               + (latestCheckpoint is null ? "no earlier checkpoint exists" : $"the latest checkpoint {latestCheckpoint} is intact (resume with it)"), innerException)
    {
        Path = path;
        Step = step;
        LatestCheckpoint = latestCheckpoint;
    }

    /// <summary>The folder or file that could not be written.</summary>
    public string Path { get; }

    /// <summary>The training step whose state was being saved.</summary>
    public long Step { get; }

    /// <summary>The newest complete checkpoint, from which training can resume; null if there is none.</summary>
    public string? LatestCheckpoint { get; }
}
