using Microsoft.Extensions.Logging;
using StableLora.Schedulers;
using StableLora.SingleFile;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>Where and in what precision each component of a pipeline is loaded.</summary>
/// <param name="Device">The device of every model.</param>
/// <param name="UnetDType">The UNet's dtype.</param>
/// <param name="VaeDType">The VAE's dtype.</param>
/// <param name="TextEncoderDType">The text encoder's dtype.</param>
/// <param name="Variant">The weight-file variant to prefer ("fp16"), or null.</param>
/// <param name="Logger">Where loading is logged.</param>
internal sealed record ModelLoadSettings(Device Device, ScalarType UnetDType, ScalarType VaeDType, ScalarType TextEncoderDType, string? Variant, ILogger Logger)
{
    public static ModelLoadSettings Uniform(Device device, ScalarType dtype, ILogger logger, string? variant = null) =>
        new(device, dtype, dtype, dtype, variant, logger);

    /// <summary>The settings of one component loaded in <paramref name="dtype"/>.</summary>
    public ComponentLoadSettings For(ScalarType dtype) => new(Device, dtype, Variant, Logger);
}

/// <summary>
/// A loaded SD 1.x/2.x text-to-image pipeline: UNet, VAE, text encoder, tokenizer and the scheduler config. The
/// models are frozen (no parameter requires a gradient) and in evaluation mode.
/// </summary>
internal sealed class StableDiffusionModel : IDisposable
{
    private StableDiffusionModel(string source, string name, UNet2DConditionModel unet, AutoencoderKL vae, ClipTextModel textEncoder,
        ClipTokenizer tokenizer, SchedulerConfig schedulerConfig, PipelineConfigs? configs)
    {
        Source = source;
        Name = name;
        Configs = configs;
        Unet = unet;
        Vae = vae;
        TextEncoder = textEncoder;
        Tokenizer = tokenizer;
        SchedulerConfig = schedulerConfig;
    }

    /// <summary>The folder (or single file) the model was loaded from; for a hub id, the cache snapshot folder.</summary>
    public string Source { get; }

    /// <summary>A short name for the model (folder name, file name without extension, or the hub repository's name), as A1111 shows it.</summary>
    public string Name { get; }

    /// <summary>The configs and tokenizer files the models were built from, for writing the pipeline back out; null for models assembled in memory without them.</summary>
    public PipelineConfigs? Configs { get; }

    public UNet2DConditionModel Unet { get; }

    public AutoencoderKL Vae { get; }

    public ClipTextModel TextEncoder { get; }

    public ClipTokenizer Tokenizer { get; }

    public SchedulerConfig SchedulerConfig { get; }

    /// <summary>Pixels per latent along each side (8 for SD).</summary>
    public int VaeScaleFactor => Vae.Config.ScaleFactor;

    /// <summary>The default image size: the UNet's sample size times the VAE factor (512 for SD 1.5).</summary>
    public int DefaultImageSize => Unet.Config.SampleSize * VaeScaleFactor;

    /// <summary>Loads a model from wherever <see cref="ModelLocation"/> found it: a diffusers folder (a hub snapshot is one) or a single file.</summary>
    public static StableDiffusionModel Load(ResolvedModel model, ModelLoadSettings settings, SingleFileOptions? singleFile = null) =>
        model.Kind == ModelSourceKind.SingleFile
            ? SingleFileLoader.Load(model.Path, singleFile ?? new SingleFileOptions(), settings, model.Name)
            : LoadFolder(model.Path, settings, model.Name);

    /// <summary>A short model name for a folder or file path.</summary>
    public static string NameOf(string path) => Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)));

    /// <summary>Loads every component of a diffusers pipeline folder.</summary>
    public static StableDiffusionModel LoadFolder(string directory, ModelLoadSettings settings, string? name = null)
    {
        var index = ModelIndex.Open(directory);
        var configs = PipelineConfigs.FromFolder(index.Directory);
        var schedulerConfig = SchedulerConfig.FromFile(Path.Combine(index.ComponentDirectory("scheduler"), "scheduler_config.json"));
        var tokenizer = ClipTokenizer.FromDirectory(index.ComponentDirectory("tokenizer"));
        var components = new List<IDisposable>();
        try
        {
            var unet = Track(components, ComponentLoader.LoadUnet(index.ComponentDirectory("unet"), settings.For(settings.UnetDType)));
            var vae = Track(components, ComponentLoader.LoadVae(index.ComponentDirectory("vae"), settings.For(settings.VaeDType)));
            var textEncoder = Track(components, ComponentLoader.LoadTextEncoder(index.ComponentDirectory("text_encoder"), settings.For(settings.TextEncoderDType)));
            CheckCompatible(Path.Combine(index.ComponentDirectory("unet"), "config.json"), unet, textEncoder);
            var model = new StableDiffusionModel(index.Directory, name ?? NameOf(index.Directory), unet, vae, textEncoder, tokenizer, schedulerConfig, configs);
            model.Freeze();
            return model;
        }
        catch
        {
            foreach (var component in components)
                component.Dispose();
            throw;
        }
    }

    /// <summary>Assembles a pipeline from models already in memory (random mock models in tests, converted checkpoints).</summary>
    public static StableDiffusionModel FromComponents(string source, UNet2DConditionModel unet, AutoencoderKL vae, ClipTextModel textEncoder,
        ClipTokenizer tokenizer, SchedulerConfig schedulerConfig, PipelineConfigs? configs = null, string? name = null)
    {
        var model = new StableDiffusionModel(source, name ?? NameOf(source), unet, vae, textEncoder, tokenizer, schedulerConfig, configs);
        model.Freeze();
        return model;
    }

    /// <summary>Encodes prompts to the UNet's conditioning [N, 77, hidden] (the text encoder's last hidden state, no attention mask, as diffusers).</summary>
    public Tensor EncodePrompts(IReadOnlyList<string> prompts) => EncodePrompts(prompts, clipSkip: 1);

    /// <summary>
    /// Encodes prompts to [N, 77, hidden] with CLIP skip (<see cref="ClipTextModel.Conditioning"/>; 1: the last hidden
    /// state, as <see cref="EncodePrompts(IReadOnlyList{string})"/>).
    /// </summary>
    public Tensor EncodePrompts(IReadOnlyList<string> prompts, int clipSkip)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = Tokenizer.EncodeBatch(prompts).to(TextEncoder.Spec.Device);
        return TextEncoder.Conditioning(ids, clipSkip).MoveToOuterDisposeScope();
    }

    /// <summary>AUTOMATIC1111's chunked encoding of prompts padded to the same chunk count: [N, chunks x 77, hidden] (<see cref="PromptChunks"/>).</summary>
    public Tensor EncodeChunkedPrompts(IReadOnlyList<string> prompts, int clipSkip)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return PromptChunks.A1111Conditioning(TextEncoder, Tokenizer, prompts, clipSkip).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Unet.Dispose();
        Vae.Dispose();
        TextEncoder.Dispose();
    }

    private void Freeze()
    {
        foreach (var module in new nn.Module[] { Unet, Vae, TextEncoder })
        {
            foreach (var parameter in module.parameters())
                parameter.requires_grad = false;
            module.eval();
        }
    }

    /// <summary>The UNet attends to the text encoder's hidden states, so their widths must agree.</summary>
    public static void CheckCompatible(string unetConfigSource, UNet2DConditionModel unet, ClipTextModel textEncoder)
    {
        if (unet.Config.CrossAttentionDim != textEncoder.Config.HiddenSize)
            throw new ModelConfigException(unetConfigSource, "cross_attention_dim",
                unet.Config.CrossAttentionDim.ToString(System.Globalization.CultureInfo.InvariantCulture),
                $"the text encoder's hidden_size is {textEncoder.Config.HiddenSize}; the two must match");
    }

    private static T Track<T>(List<IDisposable> list, T item) where T : IDisposable
    {
        list.Add(item);
        return item;
    }
}
