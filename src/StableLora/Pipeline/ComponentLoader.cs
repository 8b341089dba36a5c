using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;
using StableLora.IO;
using StableLora.Layers;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>Where, in what dtype and from which file variant a component is loaded.</summary>
internal sealed record ComponentLoadSettings(Device Device, ScalarType DType, string? Variant, ILogger Logger)
{
    public TensorSpec Spec => new(Device, DType);
}

/// <summary>Builds each SD component from its folder's config and loads its weights strictly, straight into the requested dtype and device.</summary>
internal static class ComponentLoader
{
    public static UNet2DConditionModel LoadUnet(string directory, ComponentLoadSettings settings)
    {
        var config = UNet2DConditionConfig.FromFile(Path.Combine(directory, "config.json"));
        return LoadWeights(new UNet2DConditionModel(config, settings.Spec), directory, WeightFiles.Diffusers, StateDictMapping.Identity, settings);
    }

    public static AutoencoderKL LoadVae(string directory, ComponentLoadSettings settings)
    {
        var config = AutoencoderKLConfig.FromFile(Path.Combine(directory, "config.json"));
        return LoadWeights(new AutoencoderKL(config, settings.Spec), directory, WeightFiles.Diffusers, VaeKeys.LegacyMapping, settings);
    }

    public static ClipTextModel LoadTextEncoder(string directory, ComponentLoadSettings settings)
    {
        var config = ClipTextConfig.FromFile(Path.Combine(directory, "config.json"));
        var mapping = new StateDictMapping { OptionalModelKeys = new HashSet<string> { ClipTextModel.PositionIdsKey } };
        return LoadWeights(new ClipTextModel(config, settings.Spec), directory, WeightFiles.Transformers, mapping, settings);
    }

    /// <summary>Loads <paramref name="model"/> strictly from <paramref name="reader"/>; the model is disposed if that fails.</summary>
    public static T LoadFrom<T>(T model, ITensorReader reader, StateDictMapping mapping, ComponentLoadSettings settings)
        where T : nn.Module
    {
        try
        {
            StateDictLoader.Load(model, reader, mapping);
            Log.ComponentLoaded(settings.Logger, model.GetName(), reader.Path, settings.DType.ToString(), settings.Device.ToString());
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static T LoadWeights<T>(T model, string directory, WeightNames names, StateDictMapping mapping, ComponentLoadSettings settings)
        where T : nn.Module
    {
        string path;
        try
        {
            path = WeightFiles.Locate(directory, names, settings.Variant, out bool usedVariant);
            if (settings.Variant is not null && !usedVariant)
                Log.VariantMissing(settings.Logger, settings.Variant, directory, Path.GetFileName(path));
        }
        catch
        {
            model.Dispose();
            throw;
        }

        using var reader = OpenOrDispose(path, model);
        return LoadFrom(model, reader, mapping, settings);
    }

    private static ITensorReader OpenOrDispose(string path, nn.Module model)
    {
        try
        {
            return WeightFiles.Open(path);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
