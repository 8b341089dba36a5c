using System.Diagnostics;

namespace StableLora.Tests.Reliability;

/// <summary>
/// A small tmpfs mounted over a folder: a disk that fills up at a known size, or is made read-only mid-run (root
/// ignores folder permissions, a read-only mount it cannot). Needs Linux and the right to mount.
/// </summary>
internal sealed class TmpfsMount : IDisposable
{
    private static readonly Lazy<string?> Unavailable = new(Probe);

    private TmpfsMount(string path)
    {
        Path = path;
    }

    public string Path { get; }

    /// <summary>Why tmpfs mounts cannot be used here; null when they can.</summary>
    public static string? WhyUnavailable => Unavailable.Value;

    public static TmpfsMount Create(string path, string size)
    {
        Directory.CreateDirectory(path);
        Mount("-t", "tmpfs", "-o", $"size={size}", "tmpfs", path);
        return new TmpfsMount(path);
    }

    public void Resize(string size) => Mount("-o", $"remount,size={size}", Path);

    public void MakeReadOnly() => Mount("-o", "remount,ro", Path);

    public void MakeWritable() => Mount("-o", "remount,rw", Path);

    public void Dispose() => Run("umount", "-l", Path);

    private static void Mount(params string[] arguments)
    {
        var (code, error) = Run("mount", arguments);
        if (code != 0)
            throw new InvalidOperationException($"mount {string.Join(' ', arguments)} failed ({code}): {error}");
    }

    private static (int Code, string Error) Run(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        string error = process.StandardError.ReadToEnd();
        process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, error.Trim());
    }

    private static string? Probe()
    {
        if (!OperatingSystem.IsLinux())
            return "tmpfs mounts need Linux";
        if (!Environment.IsPrivilegedProcess)
            return "mounting a tmpfs needs root (CI runs as root)";
        string probe = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "stablelora-tmpfs-probe-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (Create(probe, "64k"))
            {
            }

            return null;
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return "tmpfs cannot be mounted here: " + e.Message;
        }
        finally
        {
            try
            {
                Directory.Delete(probe);
            }
            catch (IOException)
            {
            }
        }
    }
}

/// <summary>A fact that needs <see cref="TmpfsMount"/>; skipped, with the reason, where mounting is not allowed.</summary>
internal sealed class TmpfsFactAttribute : FactAttribute
{
    public TmpfsFactAttribute()
    {
        if (TmpfsMount.WhyUnavailable is { } reason)
            Skip = reason;
    }
}
