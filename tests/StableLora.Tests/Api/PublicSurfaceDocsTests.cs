using System.Text.RegularExpressions;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Api;

/// <summary>docs/architecture.md's "Public surface" names every public type of the package, and nothing that is not one.</summary>
public sealed class PublicSurfaceDocsTests
{
    [Fact]
    public void ThePublicSurfaceTableNamesEveryPublicTypeAndOnlyThose()
    {
        string docs = File.ReadAllText(Path.Combine(RepositoryRoot(), "docs", "architecture.md"));
        int start = docs.IndexOf("## Public surface", StringComparison.Ordinal);
        int end = docs.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        string section = docs[start..end];
        // The first column of the table's rows.
        var typeColumn = string.Join("\n", section.Split('\n').Where(l => l.StartsWith("| `", StringComparison.Ordinal)).Select(l => l.Split('|')[1]));
        var named = Regex.Matches(typeColumn, "`([A-Za-z.]+)`").Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);

        var types = typeof(LoraTrainingBuilder).Assembly.GetExportedTypes().Where(t => !t.IsNested)
            .Select(t => t.FullName!["StableLora.".Length..]).ToList();
        var missing = types.Where(t => !named.Contains(t)).Order(StringComparer.Ordinal).ToList();
        Assert.True(missing.Count == 0, "not in docs/architecture.md's public surface: " + string.Join(", ", missing));
        var typeNames = types.ToHashSet(StringComparer.Ordinal);
        var framework = new[] { nameof(ArgumentException), nameof(IOException) };
        var stale = named.Where(n => !typeNames.Contains(n) && !framework.Contains(n)).ToList();
        Assert.True(stale.Count == 0, "named as public types but not exported: " + string.Join(", ", stale));
    }

    private static string RepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "StableLora.sln")))
            directory = directory.Parent;
        return directory?.FullName ?? throw new InvalidOperationException("the repository root (StableLora.sln) is not above the test binaries");
    }
}
