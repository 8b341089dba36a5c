using System.Diagnostics;

namespace StableLora.Tests.Infrastructure;

/// <summary>
/// Python with PyTorch (Debian's python3-torch, which .ci/run installs), for checking that files StableLora writes
/// are read by the reference implementation itself.
/// </summary>
internal static class PythonTorch
{
    private static readonly Lazy<string?> Interpreter = new(Find);

    public static string? Path => Interpreter.Value;

    /// <summary>Runs a Python script with arguments; returns stdout, or throws with stderr on failure.</summary>
    public static string Run(string script, params string[] arguments)
    {
        var start = new ProcessStartInfo(Path ?? throw new InvalidOperationException("python3 with torch is not available"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(script);
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        return process.ExitCode == 0 ? output : throw new InvalidOperationException($"python failed ({process.ExitCode}): {error}");
    }

    private static string? Find()
    {
        foreach (var candidate in new[] { "/usr/bin/python3", "python3" })
        {
            try
            {
                using var process = Process.Start(new ProcessStartInfo(candidate, "-c \"import torch\"") { RedirectStandardError = true, RedirectStandardOutput = true });
                if (process is null)
                    continue;
                process.WaitForExit(60_000);
                if (process.HasExited && process.ExitCode == 0)
                    return candidate;
            }
            catch (System.ComponentModel.Win32Exception)
            {
            }
        }

        return null;
    }
}

/// <summary>A fact that needs Python with PyTorch; skipped, with the reason, where it is not installed.</summary>
internal sealed class PythonTorchFactAttribute : FactAttribute
{
    public PythonTorchFactAttribute()
    {
        if (PythonTorch.Path is null)
            Skip = "python3 with torch is not installed (apt-get install python3-torch; .ci/run does this)";
    }
}
