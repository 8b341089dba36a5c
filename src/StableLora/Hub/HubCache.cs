namespace StableLora.Hub;

/// <summary>
/// One repository's folder in the Hugging Face cache, laid out as huggingface_hub does:
/// <c>refs/&lt;revision&gt;</c> holds the commit a branch or tag pointed to, <c>snapshots/&lt;commit&gt;/&lt;path&gt;</c> are
/// the files of that commit (symlinks into <c>blobs/</c>, or plain files where symlinks are unavailable),
/// <c>blobs/&lt;etag&gt;</c> the contents by git or LFS hash, and <c>.no_exist/&lt;commit&gt;/&lt;path&gt;</c> marks files the
/// hub said do not exist.
/// </summary>
internal sealed class HubCache
{
    public HubCache(string cacheDirectory, HubModelId id)
    {
        CacheDirectory = cacheDirectory;
        Id = id;
        RepoFolder = Path.Combine(cacheDirectory, id.CacheFolderName);
    }

    public string CacheDirectory { get; }

    public HubModelId Id { get; }

    public string RepoFolder { get; }

    public string SnapshotFolder(string commit) => Path.Combine(RepoFolder, "snapshots", commit);

    public string SnapshotFile(string commit, string file) => Path.Combine(SnapshotFolder(commit), ToLocal(file));

    public string BlobPath(string etag) => Path.Combine(RepoFolder, "blobs", etag);

    public string LockPath(string etag) => Path.Combine(CacheDirectory, ".locks", Id.CacheFolderName, etag + ".lock");

    /// <summary>The commit the revision names in the cache: itself when it is a commit hash, else what <c>refs/</c> records; null when unknown.</summary>
    public string? CachedCommit()
    {
        if (Id.RevisionIsCommit)
            return Id.Revision;
        string refPath = Path.Combine(RepoFolder, "refs", ToLocal(Id.Revision));
        try
        {
            if (!File.Exists(refPath))
                return null;
            string commit = File.ReadAllText(refPath).Trim();
            return commit.Length > 0 ? commit : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Records that the revision points to <paramref name="commit"/> (nothing for a commit hash), atomically.</summary>
    public void WriteRef(string commit)
    {
        if (Id.Revision == commit)
            return;
        string refPath = Path.Combine(RepoFolder, "refs", ToLocal(Id.Revision));
        if (File.Exists(refPath) && File.ReadAllText(refPath).Trim() == commit)
            return;
        IO.AtomicFile.WriteAllText(refPath, commit);
    }

    public bool KnownMissing(string commit, string file) => File.Exists(Path.Combine(RepoFolder, ".no_exist", commit, ToLocal(file)));

    public void MarkMissing(string commit, string file)
    {
        try
        {
            string marker = Path.Combine(RepoFolder, ".no_exist", commit, ToLocal(file));
            Directory.CreateDirectory(Path.GetDirectoryName(marker)!);
            using (File.Create(marker))
            {
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Only an optimisation: the next run asks the hub again.
        }
    }

    /// <summary>
    /// Makes the snapshot file point at the blob: a relative symlink (so the cache can be moved), or, where symlinks
    /// cannot be made, the blob itself moved there (a new blob) or copied (one other snapshots may use).
    /// </summary>
    public void Link(string commit, string file, string etag, bool newBlob)
    {
        string pointer = SnapshotFile(commit, file);
        string blob = BlobPath(etag);
        Directory.CreateDirectory(Path.GetDirectoryName(pointer)!);
        if (File.Exists(pointer) || new FileInfo(pointer).LinkTarget is not null)
            File.Delete(pointer);
        try
        {
            File.CreateSymbolicLink(pointer, Path.GetRelativePath(Path.GetDirectoryName(pointer)!, blob));
            return;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
        }

        if (newBlob)
            File.Move(blob, pointer);
        else
            File.Copy(blob, pointer);
    }

    /// <summary>Whether the file exists with content: a symlink counts only when its target does (.NET's File.Exists is true for a dangling link).</summary>
    public static bool Present(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
            return false;
        if (info.LinkTarget is null)
            return true;
        try
        {
            return info.ResolveLinkTarget(returnFinalTarget: true) is { Exists: true } target && target is FileInfo;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>A repository path as a relative local path; names that could leave the snapshot folder are refused.</summary>
    public static string ToLocal(string repoPath)
    {
        var segments = repoPath.Split('/');
        if (repoPath.Length == 0 || segments.Any(s => s is "" or "." or ".." || s.Contains('\\') || s.Contains(':')))
            throw new ArgumentException($"'{repoPath}' is not a safe file path inside a repository", nameof(repoPath));
        return string.Join(Path.DirectorySeparatorChar, segments);
    }
}
