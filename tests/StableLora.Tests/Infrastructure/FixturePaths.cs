namespace StableLora.Tests.Infrastructure;

/// <summary>Where the reference fixtures (copied from the diffusers-generated set into this repo) are at test time.</summary>
internal static class FixturePaths
{
    public static string Root => Path.Combine(AppContext.BaseDirectory, "Fixtures");

    public static string TinySd => Path.Combine(Root, "tiny-sd");

    public static string TinyPipeline => Path.Combine(TinySd, "pipeline");

    public static string Expected(string file) => Path.Combine(TinySd, "expected", file);

    public static string Sd15Keys => Path.Combine(Root, "sd15-keys");
}
