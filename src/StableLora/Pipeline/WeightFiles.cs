using StableLora.IO;

namespace StableLora.Pipeline;

/// <summary>
/// Finds a component's weights in its folder the way <c>from_pretrained</c> does: safetensors before PyTorch pickles,
/// a single file or a sharded <c>*.index.json</c>, and the named variant (<c>diffusion_pytorch_model.fp16.safetensors</c>)
/// when one is asked for and present.
/// </summary>
internal static class WeightFiles
{
    /// <summary>diffusers' weight names (UNet, VAE).</summary>
    public static readonly WeightNames Diffusers = new("diffusion_pytorch_model", "diffusion_pytorch_model");

    /// <summary>transformers' weight names (text encoder).</summary>
    public static readonly WeightNames Transformers = new("model", "pytorch_model");

    /// <summary>The files to try, best first.</summary>
    public static IEnumerable<string> Candidates(WeightNames names, string? variant)
    {
        IEnumerable<string> ForVariant(string? v)
        {
            string Infix(string stem) => v is null ? stem : $"{stem}.{v}";
            yield return $"{Infix(names.SafetensorsStem)}.safetensors";
            yield return v is null ? $"{names.SafetensorsStem}.safetensors.index.json" : $"{names.SafetensorsStem}.safetensors.index.{v}.json";
            if (v is not null)
                yield return $"{Infix(names.SafetensorsStem)}.safetensors.index.json";
            yield return $"{Infix(names.PickleStem)}.bin";
            yield return v is null ? $"{names.PickleStem}.bin.index.json" : $"{names.PickleStem}.bin.index.{v}.json";
        }

        return variant is null ? ForVariant(null) : ForVariant(variant).Concat(ForVariant(null));
    }

    /// <summary>The weights file (or shard index) to load from <paramref name="directory"/>.</summary>
    /// <param name="directory">The component folder.</param>
    /// <param name="names">The library's weight file names.</param>
    /// <param name="variant">The variant asked for ("fp16"), or null.</param>
    /// <param name="usedVariant">True when the variant file was found; false when the regular weights stand in for it.</param>
    public static string Locate(string directory, WeightNames names, string? variant, out bool usedVariant)
    {
        if (!Directory.Exists(directory))
            throw new InvalidModelFileException(directory, null, "the component folder does not exist");
        var candidates = Candidates(names, variant).Distinct().ToList();
        foreach (var candidate in candidates)
        {
            string path = Path.Combine(directory, candidate);
            if (File.Exists(path))
            {
                usedVariant = variant is not null && candidate.Contains($".{variant}.", StringComparison.Ordinal);
                return path;
            }
        }

        throw new InvalidModelFileException(directory, null, $"no weights found (looked for {string.Join(", ", candidates)})");
    }

    public static ITensorReader Open(string path) =>
        path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? ShardedTensorReader.Open(path) : TensorFiles.Open(path);
}

/// <summary>The file-name stems a library uses for its weights.</summary>
internal sealed record WeightNames(string SafetensorsStem, string PickleStem);
