using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;
using StableLora.IO;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;
using static TorchSharp.torch;

namespace StableLora.SingleFile;

/// <summary>
/// Loads an original LDM/CompVis single-file checkpoint of SD 1.x (<c>.safetensors</c>, or a <c>.ckpt</c> read by the
/// restricted unpickler): each component is built from its config (SD 1.5's unless a config folder or LDM yaml is
/// named), and its tensors are read one at a time from the file straight into the model under their diffusers names,
/// in the model's dtype, so no second copy of the weights is ever held.
/// </summary>
internal static class SingleFileLoader
{
    public static StableDiffusionModel Load(string path, SingleFileOptions options, ModelLoadSettings settings, string? name = null)
    {
        var configs = ResolveConfigs(options, settings.Logger);
        var unetConfig = UNet2DConditionConfig.FromJson(configs.UnetJson, configs.UnetSource);
        var vaeConfig = AutoencoderKLConfig.FromJson(configs.VaeJson, configs.VaeSource);
        var textEncoderConfig = ClipTextConfig.FromJson(configs.TextEncoderJson, configs.TextEncoderSource);
        var schedulerConfig = SchedulerConfig.FromJson(configs.SchedulerJson, configs.SchedulerSource);
        var tokenizer = configs.Tokenizer.Load();

        using var reader = TensorFiles.Open(path);
        var layout = LdmCheckpointLayout.Inspect(reader);
        Log.SingleFileLoading(settings.Logger, path, configs.Description);
        CheckInputChannels(layout, unetConfig, configs.UnetSource);
        if (layout.TrainingOnlyCount > 0)
            Log.SingleFileExtrasSkipped(settings.Logger, path, layout.TrainingOnlyCount);
        if (layout.Unknown.Count > 0)
            Log.SingleFileUnknownSkipped(settings.Logger, path, layout.Unknown.Count, string.Join(", ", layout.Unknown.Take(3)));

        var loaded = new List<IDisposable>();
        try
        {
            var unetSettings = settings.For(settings.UnetDType);
            var unet = new UNet2DConditionModel(unetConfig, unetSettings.Spec);
            loaded.Add(unet);
            var unetView = UnetView(reader, layout, options.UseEmaWeights, settings.Logger);
            ComponentLoader.LoadFrom(unet, unetView, Renamed(unet, LdmKeyMap.ForUnet(unetConfig), LdmCheckpointLayout.UnetPrefix, StateDictMapping.Identity), unetSettings);

            var vaeSettings = settings.For(settings.VaeDType);
            var vae = new AutoencoderKL(vaeConfig, vaeSettings.Spec);
            loaded.Add(vae);
            var vaeView = new TensorReaderView(reader, layout.Vae.Select(t => (t.Name, t.Name)));
            ComponentLoader.LoadFrom(vae, vaeView, Renamed(vae, LdmKeyMap.ForVae(vaeConfig), LdmCheckpointLayout.VaePrefix, VaeKeys.LegacyMapping), vaeSettings);

            var textSettings = settings.For(settings.TextEncoderDType);
            var textEncoder = new ClipTextModel(textEncoderConfig, textSettings.Spec);
            loaded.Add(textEncoder);
            var textView = new TensorReaderView(reader, layout.TextEncoder.Select(t => (t.Name, t.Name)));
            ComponentLoader.LoadFrom(textEncoder, textView, TextEncoderMapping, textSettings);

            StableDiffusionModel.CheckCompatible(configs.UnetSource, unet, textEncoder);
            return StableDiffusionModel.FromComponents(Path.GetFullPath(path), unet, vae, textEncoder, tokenizer, schedulerConfig, configs, name);
        }
        catch
        {
            foreach (var model in loaded)
                model.Dispose();
            throw;
        }
    }

    /// <summary>The text encoder's keys are transformers' under <c>cond_stage_model.transformer.</c>; checkpoints saved with old transformers lack the <c>text_model.</c> level.</summary>
    private static StateDictMapping TextEncoderMapping { get; } = new()
    {
        OptionalModelKeys = new HashSet<string> { ClipTextModel.PositionIdsKey },
        RenameFileKey = key =>
        {
            string rest = key[LdmCheckpointLayout.TextEncoderPrefix.Length..];
            return rest.StartsWith("text_model.", StringComparison.Ordinal) ? rest : "text_model." + rest;
        },
    };

    private static PipelineConfigs ResolveConfigs(SingleFileOptions options, ILogger logger)
    {
        if (options.ConfigDirectory is not null && options.OriginalConfigFile is not null)
            throw new ArgumentException("name either a config folder or an original LDM config file, not both", nameof(options));
        if (options.ConfigDirectory is { } directory)
        {
            if (!Directory.Exists(directory))
                throw new InvalidModelFileException(directory, null, "the config folder does not exist");
            return PipelineConfigs.FromFolder(Path.GetFullPath(directory), defaultMissing: true,
                component => Log.SingleFileDefaultComponent(logger, directory, component));
        }

        return options.OriginalConfigFile is { } yaml ? LdmOriginalConfig.Load(yaml) : PipelineConfigs.Sd15;
    }

    /// <summary>The UNet's tensors under their regular names, read from the EMA copy when that is asked for and present.</summary>
    private static TensorReaderView UnetView(ITensorReader reader, LdmCheckpointLayout layout, bool useEma, ILogger logger)
    {
        if (layout.Ema.Count == 0)
        {
            if (useEma)
                Log.SingleFileEmaMissing(logger, layout.Path);
            return new TensorReaderView(reader, layout.Unet.Select(t => (t.Name, t.Name)));
        }

        if (!useEma)
        {
            Log.SingleFileEmaNotUsed(logger, layout.Path);
            return new TensorReaderView(reader, layout.Unet.Select(t => (t.Name, t.Name)));
        }

        var entries = new List<(string, string)>();
        foreach (var info in layout.Unet)
        {
            string emaKey = LdmCheckpointLayout.EmaKey(info.Name);
            if (!layout.Ema.ContainsKey(emaKey))
                throw new InvalidModelFileException(layout.Path, emaKey, $"the checkpoint has EMA weights, but not for '{info.Name}'");
            entries.Add((info.Name, emaKey));
        }

        Log.SingleFileEmaUsed(logger, layout.Path);
        return new TensorReaderView(reader, entries);
    }

    /// <summary>Maps the file's LDM keys to the model's diffusers keys; file keys the layout does not name stay as they are and are reported as unexpected.</summary>
    private static StateDictMapping Renamed(nn.Module model, LdmKeyMap map, string prefix, StateDictMapping mapping)
    {
        var byLdmKey = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string key in model.state_dict().Keys)
            byLdmKey[prefix + (map.ToLdm(key) ?? throw new InvalidOperationException($"the LDM layout has no name for '{key}'"))] = key;
        return mapping with { RenameFileKey = key => byLdmKey.TryGetValue(key, out var modelKey) ? modelKey : key };
    }

    private static void CheckInputChannels(LdmCheckpointLayout layout, UNet2DConditionConfig config, string configSource)
    {
        const string ConvIn = LdmCheckpointLayout.UnetPrefix + "input_blocks.0.0.weight";
        var convIn = layout.Unet.FirstOrDefault(t => t.Name == ConvIn);
        if (convIn is null || convIn.Shape.Length != 4 || convIn.Shape[1] == config.InChannels)
            return;
        long channels = convIn.Shape[1];
        string kind = channels switch
        {
            9 => "an inpainting model",
            8 => "an image-editing (instruct-pix2pix) model",
            5 => "a depth-to-image model",
            _ => "not a plain text-to-image model",
        };
        throw new InvalidModelFileException(layout.Path, ConvIn,
            $"the UNet takes {channels} input channels, so this is {kind}; the config ({configSource}) has in_channels {config.InChannels}, and StableLora's text-to-image pipeline needs 4");
    }
}
