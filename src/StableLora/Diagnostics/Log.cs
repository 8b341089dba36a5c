using Microsoft.Extensions.Logging;

namespace StableLora.Diagnostics;

/// <summary>Every message StableLora logs, with stable event ids.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Loaded {Component} from {Path} as {DType} on {Device}")]
    public static partial void ComponentLoaded(ILogger logger, string component, string path, string dtype, string device);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "No '{Variant}' weights in {Directory}; loading {File} instead")]
    public static partial void VariantMissing(ILogger logger, string variant, string directory, string file);
}
