using System.IO.Compression;
using System.Reflection;
using StableLora.IO;

namespace StableLora;

/// <summary>
/// The built-in demo model: a miniature pipeline with SD 1.5's layout (the architecture of
/// <see cref="RandomPipeline.CreateTiny"/>) trained by this repository from scratch on sketches of four shapes in
/// black ink on white, 64 × 64 pixels. It draws what the prompts <c>a sketch of a circle</c>, <c>a sketch of a square</c>,
/// <c>a sketch of a triangle</c> and <c>a sketch of a star</c> ask for; other words mean nothing to it (its text encoder
/// is random). Its weights ship inside the library (float16), so it needs no file and no download, and it trains a
/// LoRA or generates an image in seconds on a CPU. How it was made: <c>eng/demo-model/README.md</c> in the repository.
/// </summary>
public static class DemoPipeline
{
    /// <summary>The prompts the demo model was trained on, one per shape.</summary>
    public static IReadOnlyList<string> Prompts { get; } = Demo.ShapeSketches.BaseShapes.Select(Demo.ShapeSketches.Caption).ToArray();

    /// <summary>The side of the images it was trained on and draws by default, in pixels.</summary>
    public const int ImageSize = 64;

    private static readonly string[] Files =
    [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
    ];

    /// <summary>
    /// Writes the demo model as a diffusers pipeline folder (model_index.json, unet, vae, text_encoder, tokenizer,
    /// scheduler), which every <c>FromPretrained</c> and the CLI's <c>--model</c> accept.
    /// </summary>
    /// <param name="outputDirectory">The folder to write (created; existing files of the same names are replaced).</param>
    public static void Create(string outputDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        foreach (string file in Files)
        {
            string target = Path.Combine(outputDirectory, file);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            AtomicFile.Write(target, stream =>
            {
                using var resource = OpenResource(file);
                resource.CopyTo(stream);
            });
        }

        Pipeline.TokenizerFiles.BuiltIn.WriteTo(Path.Combine(outputDirectory, "tokenizer"));
    }

    private static Stream OpenResource(string file)
    {
        bool compressed = file.EndsWith(".safetensors", StringComparison.Ordinal);
        string name = $"StableLora.demo/{file}{(compressed ? ".gz" : "")}";
        var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
                     ?? throw new InvalidOperationException($"embedded resource {name} is missing from the build");
        return compressed ? new GZipStream(stream, CompressionMode.Decompress) : stream;
    }
}
