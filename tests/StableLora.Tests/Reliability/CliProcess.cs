using System.Diagnostics;
using System.Text;

namespace StableLora.Tests.Reliability;

/// <summary>
/// The sample CLI (<c>stablelora</c>) as a separate operating-system process, built beside the tests: what a user's
/// shell or a job scheduler runs, and what SIGKILL can stop at any instruction.
/// </summary>
internal sealed class CliProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private CliProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static string Executable
    {
        get
        {
            string path = Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "StableLora.Samples.exe" : "StableLora.Samples");
            return File.Exists(path) ? path : throw new FileNotFoundException("the sample CLI is not built beside the tests", path);
        }
    }

    public string Output
    {
        get
        {
            lock (_output)
                return _output.ToString();
        }
    }

    public bool HasExited => _process.HasExited;

    public static CliProcess Start(IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo(Executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        start.Environment["NO_COLOR"] = "1";
        return new CliProcess(Process.Start(start) ?? throw new InvalidOperationException("the sample CLI did not start"));
    }

    /// <summary>Waits up to <paramref name="timeout"/>; true if the process exited within it.</summary>
    public bool WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
            return false;
        _process.WaitForExit(); // drains the redirected streams
        return true;
    }

    public int ExitCode => _process.ExitCode;

    /// <summary>SIGKILL on Unix: no handler, finaliser or flush runs.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    public void Dispose()
    {
        if (!_process.HasExited)
            Kill();
        _process.Dispose();
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_output)
            _output.AppendLine(line);
    }
}
