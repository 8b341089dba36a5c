namespace StableLora.Samples.Cli;

/// <summary>The process exit codes scripts can rely on.</summary>
internal static class ExitCodes
{
    public const int Success = 0;
    public const int Unexpected = 1;
    public const int BadArguments = 2;
    public const int BadFiles = 3;
    public const int TrainingFailed = 4;
    public const int CannotWrite = 5;
    public const int Cancelled = 130;

    /// <summary>The exit code for an exception, with the one-line message to print.</summary>
    public static (int Code, string Message) For(Exception error) => error switch
    {
        OperationCanceledException => (Cancelled, "cancelled"),
        InvalidOptionsException e => (BadArguments, FirstLine(e.Message)),
        ArgumentException e => (BadArguments, FirstLine(e.Message)),
        InvalidModelFileException e => (BadFiles, e.Message),
        HubException { Kind: HubErrorKind.NotInCache } e => (BadFiles, e.Message + "; for a local model, check the path; to download a hub id, add --allow-download"),
        HubException e => (BadFiles, e.Message),
        Data.InvalidImageException e => (BadFiles, e.Message),
        FileNotFoundException e => (BadFiles, e.Message),
        DirectoryNotFoundException e => (BadFiles, e.Message),
        InvalidDataException e => (BadFiles, e.Message),
        TrainingFailedException e => (TrainingFailed, e.Message),
        OutputSaveException e => (CannotWrite, e.Message),
        OutOfMemoryException => (TrainingFailed, "out of memory: try a smaller --batch-size or --resolution, or --mixed-precision bf16/fp16 on a GPU"),
        System.Runtime.InteropServices.ExternalException e when e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase) =>
            (TrainingFailed, "out of memory: try a smaller --batch-size or --resolution, or --mixed-precision bf16/fp16 on a GPU"),
        InvalidOperationException e when e.Message.Contains("CUDA", StringComparison.Ordinal) => (BadArguments, e.Message + " (--device cpu)"),
        System.Runtime.InteropServices.ExternalException e => (TrainingFailed, "libtorch: " + FirstLine(e.Message)),
        _ => (Unexpected, $"internal error: {FirstLine(error.Message)} (a bug in StableLora: rerun with --verbose for the details and report it)"),
    };

    private static string FirstLine(string text)
    {
        int newline = text.IndexOf('\n');
        return newline < 0 ? text : text[..newline];
    }
}
