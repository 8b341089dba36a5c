using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.IO;
using StableLora.Layers;
using StableLora.Lora;
using StableLora.Pipeline;
using StableLora.TextEncoder;
using StableLora.Unet;
using static TorchSharp.torch;

namespace StableLora;

/// <summary>
/// A LoRA for a Stable Diffusion 1.x/2.x model, read from or written to any of the formats of the SD ecosystem: the
/// diffusers' attention-processor <c>lora_weights.pt</c> (Python's <c>torch.load</c> reads it; attention LoRA only), kohya / AUTOMATIC1111 /
/// ComfyUI <c>.safetensors</c> (LoRA, LoCon, text encoder; LyCORIS LoHa, LoKr and DoRA are read for generation), and
/// diffusers / PEFT <c>.safetensors</c>.
/// </summary>
/// <example>
/// <code>
/// using var lora = LoraWeights.Load("output/lora_kohya.safetensors");
/// lora.Save("output/my_style_peft.safetensors", LoraFileFormat.Peft);
/// </code>
/// </example>
public sealed class LoraWeights : IDisposable
{
    private readonly List<ModuleAdapterWeights> _modules;

    private readonly IReadOnlyList<string> _unrecognised;

    private LoraWeights(string? sourcePath, LoraFileFormat format, List<ModuleAdapterWeights> modules, IReadOnlyDictionary<string, string> metadata,
        IReadOnlyList<string>? unrecognised = null)
    {
        _unrecognised = unrecognised ?? Array.Empty<string>();
        SourcePath = sourcePath;
        SourceFormat = format;
        _modules = modules;
        Metadata = metadata;
    }

    /// <summary>The file this LoRA was read from, or null when it was created in memory.</summary>
    public string? SourcePath { get; }

    /// <summary>The layout the file used.</summary>
    public LoraFileFormat SourceFormat { get; }

    /// <summary>How many layers the LoRA adapts (UNet and text encoder together; 256 for the attention preset on SD 1.5).</summary>
    public int ModuleCount => _modules.Count;

    /// <summary>How many of those layers are the text encoder's.</summary>
    public int TextEncoderModuleCount => _modules.Count(m => ModuleKeys.IsTextEncoder(m.Key));

    /// <summary>The kinds of module the file holds ("LoRA", "LoHa", "LoKr", ...), in first-seen order.</summary>
    public IReadOnlyList<string> ModuleKinds => _modules.Select(m => m.Kind).Distinct().ToList();

    /// <summary>The largest rank of any LoRA layer, or 0 when the file holds no plain LoRA layers.</summary>
    public int Rank => LoraModules.Select(m => m.Rank).DefaultIfEmpty(0).Max();

    /// <summary>The alpha of the LoRA layers when they share one, else null.</summary>
    public double? Alpha
    {
        get
        {
            var alphas = LoraModules.Select(m => m.Alpha).Distinct().ToList();
            return alphas.Count == 1 ? alphas[0] : null;
        }
    }

    /// <summary>The file's metadata (kohya's <c>ss_*</c> keys, PEFT's adapter config); empty for PyTorch files.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    internal IReadOnlyList<ModuleAdapterWeights> Modules => _modules;

    private IEnumerable<LoraModuleWeights> LoraModules => _modules.OfType<LoraModuleWeights>();

    /// <summary>Reads a LoRA file, detecting its layout from its keys.</summary>
    /// <param name="path">A <c>.pt</c>/<c>.bin</c> PyTorch file or a <c>.safetensors</c> file.</param>
    /// <exception cref="InvalidModelFileException">The file is missing, damaged, not a LoRA, or made for another model family; the message names the file and key.</exception>
    public static LoraWeights Load(string path)
    {
        var content = LoraFileReader.Read(path);
        return new LoraWeights(path, content.Format, content.Modules.ToList(), content.Metadata, content.Unrecognised);
    }

    /// <summary>Writes the LoRA in <paramref name="format"/> (fp32), atomically.</summary>
    /// <param name="path">The file to write.</param>
    /// <param name="format">The layout: <see cref="LoraFileFormat.AttnProcs"/> (.pt; attention LoRA only), <see cref="LoraFileFormat.Kohya"/> or <see cref="LoraFileFormat.Peft"/>.</param>
    /// <param name="metadata">Training facts for kohya's metadata, or null.</param>
    /// <exception cref="InvalidOptionsException">The LoRA cannot be written in that format (LyCORIS modules; non-attention layers in the attention-processor format); the message says why.</exception>
    public void Save(string path, LoraFileFormat format, LoraExportMetadata? metadata = null)
    {
        var plain = PlainLoraModules(format);
        if (format == LoraFileFormat.AttnProcs && LoraFileWriter.CannotHoldInSeedFormat(plain) is { } why)
            throw new InvalidOptionsException("format", format, $"the diffusers attention-processor format (.pt) cannot hold this LoRA: {why}; write it as Kohya or Peft");
        LoraFileWriter.Write(path, plain, format, metadata);
    }

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
        var metadata = lora.Metadata.TryGetValue("ss_output_name", out var name) ? new LoraExportMetadata { OutputName = name } : null;
        lora.Save(outputPath, format, metadata);
    }

    /// <summary>
    /// Checks that every module fits the UNet and text encoder of a diffusers model folder (names and shapes), without
    /// loading their weights.
    /// </summary>
    /// <param name="modelDirectory">The diffusers model folder (its <c>unet/config.json</c> and <c>text_encoder/config.json</c> are read).</param>
    /// <exception cref="InvalidModelFileException">A module does not fit; the message names the key and both shapes.</exception>
    public void CheckCompatibleWith(string modelDirectory)
    {
        var index = ModelIndex.Open(modelDirectory);
        var spec = new TensorSpec(META, ScalarType.Float32);
        var config = UNet2DConditionConfig.FromFile(Path.Combine(index.ComponentDirectory("unet"), "config.json"));
        using var unet = new UNet2DConditionModel(config, spec);
        using var textEncoder = TextEncoderModuleCount > 0
            ? new ClipTextModel(ClipTextConfig.FromFile(Path.Combine(index.ComponentDirectory("text_encoder"), "config.json")), spec)
            : null;
        using var network = CreateNetwork(new AdaptableModels(unet, textEncoder), UnmatchedLoraKeys.Error, NullLogger.Instance, spec);
    }

    internal LoraNetwork CreateNetwork(AdaptableModels models, UnmatchedLoraKeys unmatched, ILogger logger, TensorSpec? spec = null)
    {
        if (unmatched == UnmatchedLoraKeys.Error && _unrecognised.Count > 0)
            throw new InvalidModelFileException(SourcePath ?? "(in memory)", _unrecognised[0],
                "no layer of an SD 1.x/2.x UNet or text encoder has this name (is the LoRA for another model? or use the option that skips unmatched keys)");
        return LoraNetwork.FromWeights(models, SourcePath ?? "(in memory)", _modules, unmatched, logger, spec, _unrecognised);
    }

    internal static LoraWeights FromNetwork(LoraNetwork network)
    {
        var modules = network.ToModuleWeights()
            .Select(m => (ModuleAdapterWeights)(m with { Down = m.Down.detach().cpu().clone(), Up = m.Up.detach().cpu().clone() })).ToList();
        return new LoraWeights(null, LoraFileFormat.AttnProcs, modules, new Dictionary<string, string>());
    }

    private List<LoraModuleWeights> PlainLoraModules(LoraFileFormat format)
    {
        var other = _modules.FirstOrDefault(m => m is not LoraModuleWeights { IsPlain: true });
        if (other is not null)
            throw new InvalidOptionsException("format", format,
                $"'{other.SourceKey}' is a {other.Kind} module{(other.DoraScale is null ? "" : " with DoRA")}; StableLora reads such modules for generation but writes only plain LoRA/LoCon files");
        return _modules.Cast<LoraModuleWeights>().ToList();
    }

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        foreach (var tensor in _modules.SelectMany(m => m.Tensors))
            tensor.Dispose();
    }
}
