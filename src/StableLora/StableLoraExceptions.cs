namespace StableLora;

/// <summary>
/// The base of the exceptions StableLora throws for its own failures: files it cannot use
/// (<see cref="InvalidModelFileException"/> and its kinds), the hub (<see cref="HubException"/>), training that cannot
/// go on (<see cref="TrainingFailedException"/>) and images it cannot read (<see cref="Data.InvalidImageException"/>).
/// Two kinds keep the .NET base a caller already handles instead: <see cref="InvalidOptionsException"/> is an
/// <see cref="ArgumentException"/> (bad options are bad arguments) and <see cref="OutputSaveException"/> an
/// <see cref="IOException"/> (the disk refused a write). Catch this type to handle everything else StableLora reports.
/// </summary>
public abstract class StableLoraException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong, in words a user can act on.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    protected StableLoraException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}

/// <summary>A model, weight or LoRA file that StableLora cannot use, with the file and (where known) the key at fault.</summary>
public class InvalidModelFileException : StableLoraException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="filePath">The file at fault.</param>
    /// <param name="key">The tensor, config or archive key at fault, or <see langword="null"/> when the whole file is.</param>
    /// <param name="message">What is wrong, in words a user can act on.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public InvalidModelFileException(string filePath, string? key, string message, Exception? innerException = null)
        : base(Compose(filePath, key, message), innerException)
    {
        FilePath = filePath;
        Key = key;
    }

    /// <summary>The file at fault.</summary>
    public string FilePath { get; }

    /// <summary>The key at fault, or <see langword="null"/> when the problem concerns the whole file.</summary>
    public string? Key { get; }

    private static string Compose(string filePath, string? key, string message) =>
        key is null ? $"{filePath}: {message}" : $"{filePath}: '{key}': {message}";
}

/// <summary>A configuration value that StableLora does not support or that is out of range.</summary>
public sealed class ModelConfigException : InvalidModelFileException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="filePath">The config file (or a description of the config's source).</param>
    /// <param name="key">The config key at fault.</param>
    /// <param name="value">The offending value as written in the config.</param>
    /// <param name="message">Why the value is not supported.</param>
    public ModelConfigException(string filePath, string key, string? value, string message)
        : base(filePath, key, $"value {value ?? "null"} is not supported: {message}")
    {
        Value = value;
    }

    /// <summary>The offending value as written in the config.</summary>
    public string? Value { get; }
}

/// <summary>
/// A weights file whose tensors do not match the model built from its config: keys missing from the file, keys the
/// model does not have, or tensors of the wrong shape. Nothing is copied into the model when this is thrown.
/// </summary>
public sealed class StateDictMismatchException : InvalidModelFileException
{
    internal StateDictMismatchException(string filePath, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected,
        IReadOnlyList<string> misshaped, string firstKey)
        : base(filePath, firstKey, Describe(missing, unexpected, misshaped))
    {
        MissingKeys = missing;
        UnexpectedKeys = unexpected;
        MisshapedKeys = misshaped;
    }

    /// <summary>Keys the model needs that the file lacks, each with the shape the model expects.</summary>
    public IReadOnlyList<string> MissingKeys { get; }

    /// <summary>Keys in the file that the model does not have, each with its shape in the file.</summary>
    public IReadOnlyList<string> UnexpectedKeys { get; }

    /// <summary>Keys present in both with different shapes, each with both shapes.</summary>
    public IReadOnlyList<string> MisshapedKeys { get; }

    private static string Describe(IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> misshaped)
    {
        const int Shown = 5;
        var parts = new List<string>();
        if (misshaped.Count > 0)
            parts.Add($"{misshaped.Count} with the wrong shape ({string.Join("; ", misshaped.Take(Shown))}{(misshaped.Count > Shown ? "; ..." : "")})");
        if (missing.Count > 0)
            parts.Add($"{missing.Count} missing from the file ({string.Join("; ", missing.Take(Shown))}{(missing.Count > Shown ? "; ..." : "")})");
        if (unexpected.Count > 0)
            parts.Add($"{unexpected.Count} not in the model ({string.Join("; ", unexpected.Take(Shown))}{(unexpected.Count > Shown ? "; ..." : "")})");
        return "the weights do not match the model: " + string.Join(", ", parts);
    }
}

/// <summary>Why a model could not be taken from the Hugging Face cache or hub.</summary>
public enum HubErrorKind
{
    /// <summary>A file is not in the local cache, and downloads are off or offline mode is on.</summary>
    NotInCache,

    /// <summary>The hub says the repository does not exist (or is private and no token was sent).</summary>
    RepositoryNotFound,

    /// <summary>The repository has no such branch, tag or commit.</summary>
    RevisionNotFound,

    /// <summary>The repository has no such file.</summary>
    FileNotFound,

    /// <summary>401: the repository needs a token (HF_TOKEN), or the token was refused.</summary>
    Unauthorized,

    /// <summary>403: the token may not read this repository (a gated model whose conditions were not accepted).</summary>
    AccessDenied,

    /// <summary>A downloaded file does not have the size or checksum the hub announced.</summary>
    IntegrityCheckFailed,

    /// <summary>The hub could not be reached, or answered with a server error.</summary>
    Network,
}

/// <summary>A model named by a hub id that could not be resolved from the cache or downloaded from the hub.</summary>
public sealed class HubException : StableLoraException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="kind">Why.</param>
    /// <param name="repoId">The repository (<c>org/name</c>).</param>
    /// <param name="revision">The branch, tag or commit asked for.</param>
    /// <param name="fileName">The file at fault, or null when the whole repository is.</param>
    /// <param name="message">What is wrong, in words a user can act on.</param>
    /// <param name="statusCode">The HTTP status the hub answered, if any.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public HubException(HubErrorKind kind, string repoId, string revision, string? fileName, string message, int? statusCode = null, Exception? innerException = null)
        : base($"{repoId}@{revision}{(fileName is null ? "" : $": {fileName}")}: {message}", innerException)
    {
        Kind = kind;
        Detail = message;
        RepoId = repoId;
        Revision = revision;
        FileName = fileName;
        StatusCode = statusCode;
    }

    /// <summary>Why the model could not be resolved.</summary>
    public HubErrorKind Kind { get; }

    /// <summary>The repository (<c>org/name</c>).</summary>
    public string RepoId { get; }

    /// <summary>The branch, tag or commit asked for.</summary>
    public string Revision { get; }

    /// <summary>The file at fault (a path in the repository), or null.</summary>
    public string? FileName { get; }

    /// <summary>The HTTP status the hub answered, or null.</summary>
    public int? StatusCode { get; }

    /// <summary>The message without the repository and file it names.</summary>
    internal string Detail { get; }
}
