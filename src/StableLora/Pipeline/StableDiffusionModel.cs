using Microsoft.Extensions.Logging;
using StableLora.Schedulers;
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
}

/// <summary>
/// A loaded SD 1.x/2.x text-to-image pipeline: UNet, VAE, text encoder, tokenizer and the scheduler config. The
/// models are frozen (no parameter requires a gradient) and in evaluation mode.
/// </summary>
internal sealed class StableDiffusionModel : IDisposable
{
    private StableDiffusionModel(string source, UNet2DConditionModel unet, AutoencoderKL vae, ClipTextModel textEncoder,
        ClipTokenizer tokenizer, SchedulerConfig schedulerConfig)
    {
        Source = source;
        Unet = unet;
        Vae = vae;
        TextEncoder = textEncoder;
        Tokenizer = tokenizer;
        SchedulerConfig = schedulerConfig;
    }

    /// <summary>The folder (or file) the model came from.</summary>
    public string Source { get; }

    /// <summary>A short name for the model (folder or file name), as A1111 shows it.</summary>
    public string Name => Path.GetFileNameWithoutExtension(Source.TrimEnd('/', '\\'));

    public UNet2DConditionModel Unet { get; }

    public AutoencoderKL Vae { get; }

    public ClipTextModel TextEncoder { get; }

    public ClipTokenizer Tokenizer { get; }

    public SchedulerConfig SchedulerConfig { get; }

    /// <summary>Pixels per latent along each side (8 for SD).</summary>
    public int VaeScaleFactor => Vae.Config.ScaleFactor;

    /// <summary>The default image size: the UNet's sample size times the VAE factor (512 for SD 1.5).</summary>
    public int DefaultImageSize => Unet.Config.SampleSize * VaeScaleFactor;

    /// <summary>Loads every component of a diffusers pipeline folder.</summary>
    public static StableDiffusionModel LoadFolder(string directory, ModelLoadSettings settings)
    {
        var index = ModelIndex.Open(directory);
        var schedulerConfig = SchedulerConfig.FromFile(Path.Combine(index.ComponentDirectory("scheduler"), "scheduler_config.json"));
        var tokenizer = ClipTokenizer.FromDirectory(index.ComponentDirectory("tokenizer"));
        var components = new List<IDisposable>();
        try
        {
            var unet = Track(components, ComponentLoader.LoadUnet(index.ComponentDirectory("unet"), Settings(settings, settings.UnetDType)));
            var vae = Track(components, ComponentLoader.LoadVae(index.ComponentDirectory("vae"), Settings(settings, settings.VaeDType)));
            var textEncoder = Track(components, ComponentLoader.LoadTextEncoder(index.ComponentDirectory("text_encoder"), Settings(settings, settings.TextEncoderDType)));
            CheckCompatible(index, unet, textEncoder);
            var model = new StableDiffusionModel(index.Directory, unet, vae, textEncoder, tokenizer, schedulerConfig);
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
        ClipTokenizer tokenizer, SchedulerConfig schedulerConfig)
    {
        var model = new StableDiffusionModel(source, unet, vae, textEncoder, tokenizer, schedulerConfig);
        model.Freeze();
        return model;
    }

    /// <summary>Encodes prompts to the UNet's conditioning [N, 77, hidden] (the text encoder's last hidden state, no attention mask, as diffusers).</summary>
    public Tensor EncodePrompts(IReadOnlyList<string> prompts)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = Tokenizer.EncodeBatch(prompts).to(TextEncoder.Spec.Device);
        return TextEncoder.Forward(ids).LastHiddenState.MoveToOuterDisposeScope();
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

    private static void CheckCompatible(ModelIndex index, UNet2DConditionModel unet, ClipTextModel textEncoder)
    {
        if (unet.Config.CrossAttentionDim != textEncoder.Config.HiddenSize)
            throw new ModelConfigException(Path.Combine(index.ComponentDirectory("unet"), "config.json"), "cross_attention_dim",
                unet.Config.CrossAttentionDim.ToString(System.Globalization.CultureInfo.InvariantCulture),
                $"the text encoder's hidden_size is {textEncoder.Config.HiddenSize}; the two must match");
    }

    private static ComponentLoadSettings Settings(ModelLoadSettings settings, ScalarType dtype) =>
        new(settings.Device, dtype, settings.Variant, settings.Logger);

    private static T Track<T>(List<IDisposable> list, T item) where T : IDisposable
    {
        list.Add(item);
        return item;
    }
}
