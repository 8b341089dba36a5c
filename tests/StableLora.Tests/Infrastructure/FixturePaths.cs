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

/// <summary>How the parity tests load the fixture's components: through the library's own loader, in float32 on the CPU.</summary>
internal static class FixtureLoadSettings
{
    public static StableLora.Pipeline.ComponentLoadSettings CpuFloat32 { get; } =
        new(TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.Float32, null, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
}
