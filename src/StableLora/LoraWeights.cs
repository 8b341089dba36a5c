using StableLora.AttentionProcessors;
using StableLora.IO;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Unet;
using static TorchSharp.torch;

namespace StableLora;

/// <summary>
/// A LoRA adapter for the UNet's attention projections, read from or written to any of the formats of the SD
/// ecosystem: the seed's <c>lora_weights.pt</c> (Python's <c>torch.load</c> reads it), kohya / AUTOMATIC1111 /
/// ComfyUI <c>.safetensors</c>, and diffusers / PEFT <c>pytorch_lora_weights.safetensors</c>.
/// </summary>
/// <example>
/// <code>
/// using var lora = LoraWeights.Load("output/lora_weights.pt");
/// lora.Save("output/my_style.safetensors", LoraFileFormat.Kohya);
/// </code>
/// </example>
public sealed class LoraWeights : IDisposable
{
    private readonly List<LoraModuleWeights> _modules;

    private LoraWeights(string? sourcePath, LoraFileFormat format, List<LoraModuleWeights> modules, IReadOnlyDictionary<string, string> metadata)
    {
        SourcePath = sourcePath;
        SourceFormat = format;
        _modules = modules;
        Metadata = metadata;
    }

    /// <summary>The file this LoRA was read from, or null when it was created in memory.</summary>
    public string? SourcePath { get; }

    /// <summary>The layout the file used.</summary>
    public LoraFileFormat SourceFormat { get; }

    /// <summary>How many projections the LoRA adapts (256 for the seed's recipe on SD 1.5).</summary>
    public int ModuleCount => _modules.Count;

    /// <summary>The largest rank of any layer (all layers share one rank unless the file was made otherwise).</summary>
    public int Rank => _modules.Max(m => m.Rank);

    /// <summary>The alpha of the layers when they share one, else null.</summary>
    public double? Alpha => _modules.Select(m => m.Alpha).Distinct().Count() == 1 ? _modules[0].Alpha : null;

    /// <summary>The file's metadata (kohya's <c>ss_*</c> keys, PEFT's adapter config); empty for PyTorch files.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    internal IReadOnlyList<LoraModuleWeights> Modules => _modules;

    /// <summary>Reads a LoRA file, detecting its layout from its keys.</summary>
    /// <param name="path">A <c>.pt</c>/<c>.bin</c> PyTorch file or a <c>.safetensors</c> file.</param>
    /// <exception cref="InvalidModelFileException">The file is missing, damaged, not a LoRA, or holds a layer StableLora cannot apply; the message names the file and key.</exception>
    public static LoraWeights Load(string path)
    {
        var content = LoraFileReader.Read(path);
        return new LoraWeights(path, content.Format, content.Modules.ToList(), content.Metadata);
    }

    /// <summary>Writes the LoRA in <paramref name="format"/> (fp32), atomically.</summary>
    /// <param name="path">The file to write.</param>
    /// <param name="format">The layout: <see cref="LoraFileFormat.AttnProcs"/> (.pt), <see cref="LoraFileFormat.Kohya"/> or <see cref="LoraFileFormat.Peft"/>.</param>
    /// <param name="metadata">Training facts for kohya's metadata, or null.</param>
    public void Save(string path, LoraFileFormat format, LoraExportMetadata? metadata = null) =>
        LoraFileWriter.Write(path, _modules, format, metadata);

    /// <summary>Reads <paramref name="inputPath"/> in whatever layout it has and writes it to <paramref name="outputPath"/> in <paramref name="format"/>.</summary>
    /// <param name="inputPath">The LoRA to convert.</param>
    /// <param name="outputPath">The file to write.</param>
    /// <param name="format">The layout to write.</param>
    /// <param name="modelDirectory">A diffusers model folder to check the LoRA against first, or null.</param>
    public static void Convert(string inputPath, string outputPath, LoraFileFormat format, string? modelDirectory = null)
    {
        using var lora = Load(inputPath);
        if (modelDirectory is not null)
            lora.CheckCompatibleWith(modelDirectory);
        var metadata = lora.Metadata.TryGetValue("ss_output_name", out var name) ? new LoraExportMetadata(OutputName: name) : null;
        lora.Save(outputPath, format, metadata);
    }

    /// <summary>Checks that every layer fits the UNet of a diffusers model folder (names and shapes), without loading its weights.</summary>
    /// <param name="modelDirectory">The diffusers model folder (its <c>unet/config.json</c> is read).</param>
    /// <exception cref="InvalidModelFileException">A layer does not fit; the message names the key and both shapes.</exception>
    public void CheckCompatibleWith(string modelDirectory)
    {
        var config = UNet2DConditionConfig.FromFile(Path.Combine(ModelIndex.Open(modelDirectory).ComponentDirectory("unet"), "config.json"));
        using var unet = new UNet2DConditionModel(config, new TensorSpec(META, ScalarType.Float32));
        using var network = LoraNetwork.FromWeights(unet, SourcePath ?? "(in memory)", _modules, new TensorSpec(META, ScalarType.Float32));
    }

    internal LoraNetwork CreateNetwork(UNet2DConditionModel unet, TensorSpec? spec = null) =>
        LoraNetwork.FromWeights(unet, SourcePath ?? "(in memory)", _modules, spec);

    internal static LoraWeights FromNetwork(LoraNetwork network)
    {
        var modules = network.ToModuleWeights()
            .Select(m => m with { Down = m.Down.detach().cpu().clone(), Up = m.Up.detach().cpu().clone() }).ToList();
        return new LoraWeights(null, LoraFileFormat.AttnProcs, modules, new Dictionary<string, string>());
    }

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        foreach (var module in _modules)
        {
            module.Down.Dispose();
            module.Up.Dispose();
        }
    }
}
