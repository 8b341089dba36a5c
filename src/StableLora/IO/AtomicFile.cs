namespace StableLora.IO;

/// <summary>
/// Writes a file so that a reader (or a crash) never sees a partial one: the content goes to a temporary file in the
/// same folder, is flushed to disk, and only then replaces the target by rename.
/// </summary>
internal static class AtomicFile
{
    private static readonly System.Text.RegularExpressions.Regex TemporaryName = new(@"^\..+\.[0-9a-f]{32}\.tmp$", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    /// <summary>Deletes the temporary files this class left in <paramref name="directory"/> (only a killed process leaves them).</summary>
    public static void RemoveStaleTemporaries(string directory)
    {
        foreach (var file in Directory.EnumerateFiles(directory, ".*.tmp").Where(f => TemporaryName.IsMatch(System.IO.Path.GetFileName(f))))
            TryDelete(file);
    }

    public static void Write(string path, Action<Stream> writeContent)
    {
        string fullPath = System.IO.Path.GetFullPath(path);
        string directory = System.IO.Path.GetDirectoryName(fullPath) ?? ".";
        Directory.CreateDirectory(directory);
        string temporary = System.IO.Path.Combine(directory, $".{System.IO.Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                writeContent(stream);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, fullPath, overwrite: true);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, new System.Text.UTF8Encoding(false), 1 << 12, leaveOpen: true);
            writer.Write(text);
        });

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
