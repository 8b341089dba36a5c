namespace StableLora;

/// <summary>A model, weight or LoRA file that StableLora cannot use, with the file and (where known) the key at fault.</summary>
public class InvalidModelFileException : Exception
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
