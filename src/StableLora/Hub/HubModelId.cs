using System.Text.RegularExpressions;

namespace StableLora.Hub;

/// <summary>A model repository on the Hugging Face hub: <c>org/name</c>, optionally <c>@revision</c> (a branch, tag or commit).</summary>
internal sealed partial record HubModelId(string RepoId, string Revision)
{
    public const string DefaultRevision = "main";

    /// <summary>The repository's name without its owner (the model's short name).</summary>
    public string Name => RepoId[(RepoId.IndexOf('/') + 1)..];

    /// <summary>The repository's folder in the cache, as huggingface_hub names it (<c>models--org--name</c>).</summary>
    public string CacheFolderName => "models--" + RepoId.Replace("/", "--", StringComparison.Ordinal);

    public bool RevisionIsCommit => IsCommitHash(Revision);

    public override string ToString() => Revision == DefaultRevision ? RepoId : $"{RepoId}@{Revision}";

    public static bool IsCommitHash(string text) => CommitHash().IsMatch(text);

    /// <summary>
    /// Parses <c>org/name</c> or <c>org/name@revision</c> with huggingface_hub's rules for repository ids (letters,
    /// digits, '-', '_' and '.', no "--" or "..", at most 96 characters). Anything else, a path for instance, is not one.
    /// </summary>
    public static bool TryParse(string text, out HubModelId id)
    {
        id = null!;
        if (string.IsNullOrWhiteSpace(text))
            return false;
        string repo = text;
        string revision = DefaultRevision;
        int at = text.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            repo = text[..at];
            revision = text[(at + 1)..];
            if (revision.Length == 0 || revision.Any(char.IsWhiteSpace) || revision.Contains("..", StringComparison.Ordinal)
                || revision.StartsWith('/') || revision.EndsWith('/'))
                return false;
        }

        if (repo.Length > 96 || !RepoIdPattern().IsMatch(repo) || repo.Contains("--", StringComparison.Ordinal)
            || repo.Contains("..", StringComparison.Ordinal) || repo.EndsWith(".git", StringComparison.Ordinal))
            return false;
        id = new HubModelId(repo, revision);
        return true;
    }

    [GeneratedRegex(@"^[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?/[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?$")]
    private static partial Regex RepoIdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitHash();
}
