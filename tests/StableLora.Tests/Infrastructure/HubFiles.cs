using System.Security.Cryptography;
using System.Text;

namespace StableLora.Tests.Infrastructure;

/// <summary>How the hub identifies file contents: LFS files (weights) by sha256, the rest by git blob sha1.</summary>
internal static class HubFiles
{
    public const string Commit = "3f1a0c9be7d24c1e8a5b6d7f9e0c1b2a3d4e5f60";

    public static bool IsLfs(string path) =>
        path.EndsWith(".safetensors", StringComparison.Ordinal) || path.EndsWith(".bin", StringComparison.Ordinal) || path.EndsWith(".ckpt", StringComparison.Ordinal);

    public static string Sha256(byte[] content) => Convert.ToHexString(SHA256.HashData(content)).ToLowerInvariant();

    public static string GitSha1(byte[] content) =>
        Convert.ToHexString(SHA1.HashData(Encoding.ASCII.GetBytes($"blob {content.Length}\0").Concat(content).ToArray())).ToLowerInvariant();

    public static string Etag(string path, byte[] content) => IsLfs(path) ? Sha256(content) : GitSha1(content);

    /// <summary>Every file under a folder as repository paths ('/'-separated) with their bytes.</summary>
    public static Dictionary<string, byte[]> ReadFolder(string folder) =>
        Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f).Replace(Path.DirectorySeparatorChar, '/'), File.ReadAllBytes);

    /// <summary>
    /// Lays a repository out in a Hugging Face cache as huggingface_hub does: blobs by etag, snapshot files as
    /// relative symlinks into blobs, and refs naming the commit. Returns the snapshot folder.
    /// </summary>
    public static string CreateCachedRepo(string cacheDirectory, string repoId, IReadOnlyDictionary<string, byte[]> files,
        string commit = Commit, params string[] refs)
    {
        string repo = Path.Combine(cacheDirectory, "models--" + repoId.Replace("/", "--", StringComparison.Ordinal));
        string snapshot = Path.Combine(repo, "snapshots", commit);
        foreach (var (path, content) in files)
        {
            string blob = Path.Combine(repo, "blobs", Etag(path, content));
            Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
            File.WriteAllBytes(blob, content);
            string pointer = Path.Combine(snapshot, path.Replace('/', Path.DirectorySeparatorChar));
            Directory.CreateDirectory(Path.GetDirectoryName(pointer)!);
            File.CreateSymbolicLink(pointer, Path.GetRelativePath(Path.GetDirectoryName(pointer)!, blob));
        }

        foreach (string name in refs.Length == 0 ? new[] { "main" } : refs)
        {
            Directory.CreateDirectory(Path.Combine(repo, "refs"));
            File.WriteAllText(Path.Combine(repo, "refs", name), commit);
        }

        return snapshot;
    }
}
