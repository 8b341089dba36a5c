using System.Runtime.InteropServices;

namespace StableLora.Kernels;

/// <summary>The CPU in words, for the guard's messages: model, family and the vector extensions oneDNN chooses kernels by.</summary>
internal static class CpuDescription
{
    private static readonly Lazy<string> Cached = new(Describe);
    private static readonly string[] Extensions = { "avx2", "avx512f", "avx512_bf16", "amx_tile" };

    public static string Current => Cached.Value;

    private static string Describe()
    {
        string architecture = RuntimeInformation.ProcessArchitecture.ToString();
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                return FromCpuInfo(File.ReadLines("/proc/cpuinfo").TakeWhile(l => l.Length > 0).ToList()) ?? architecture;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return Environment.GetEnvironmentVariable("PROCESSOR_IDENTIFIER") ?? architecture;
    }

    /// <summary>"AMD EPYC (family 26, model 2; avx2 avx512f avx512_bf16)" from the first processor's /proc/cpuinfo lines.</summary>
    public static string? FromCpuInfo(IReadOnlyList<string> lines)
    {
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in lines)
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0)
                fields.TryAdd(line[..colon].Trim(), line[(colon + 1)..].Trim());
        }

        if (!fields.TryGetValue("model name", out var name))
            return null;
        var flags = fields.TryGetValue("flags", out var all) ? all.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal) : new HashSet<string>();
        var present = Extensions.Where(flags.Contains).ToList();
        string family = fields.TryGetValue("cpu family", out var f) ? $"family {f}" : "";
        string model = fields.TryGetValue("model", out var m) ? $"model {m}" : "";
        string identity = string.Join(", ", new[] { family, model }.Where(s => s.Length > 0));
        string extensions = present.Count > 0 ? string.Join(' ', present) : "no AVX2";
        return identity.Length > 0 ? $"{name} ({identity}; {extensions})" : $"{name} ({extensions})";
    }
}
