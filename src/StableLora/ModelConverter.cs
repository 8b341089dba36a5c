using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Diagnostics;
using StableLora.Hub;
using StableLora.Pipeline;
using StableLora.SingleFile;
using static TorchSharp.torch;

namespace StableLora;

/// <summary>
/// Converts an SD 1.x model between the ways it is held: any model <see cref="StableDiffusionGenerator.FromPretrained"/>
/// accepts (a diffusers folder, a single-file checkpoint, a hub id) is loaded on the CPU and written, tensor by tensor,
/// as an original LDM single-file <c>.safetensors</c> or as a diffusers folder (<c>save_pretrained</c>'s layout).
/// </summary>
/// <example>
/// <code>
/// ModelConverter.ToDiffusersFolder("v1-5-pruned-emaonly.safetensors", "models/sd15",
///     new ModelConversionOptions { SingleFile = new SingleFileOptions { UseEmaWeights = true } });
/// ModelConverter.ToSingleFile("models/sd15", "sd15-fp16.safetensors", new ModelConversionOptions { DType = ModelDType.Float16 });
/// </code>
/// </example>
public static class ModelConverter
{
    /// <summary>Writes <paramref name="model"/> as one original-layout <c>.safetensors</c> file (UNet, VAE and text encoder under their LDM names).</summary>
    /// <param name="model">A diffusers folder, single-file checkpoint or hub id.</param>
    /// <param name="outputFile">The file to write; it must end in <c>.safetensors</c>.</param>
    /// <param name="options">The weights' dtype, how the source is read, overwriting.</param>
    /// <exception cref="InvalidModelFileException">The source cannot be loaded.</exception>
    /// <exception cref="IOException">The output exists and <see cref="ModelConversionOptions.Overwrite"/> is off.</exception>
    public static void ToSingleFile(string model, string outputFile, ModelConversionOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputFile);
        if (!outputFile.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException("single files are written as .safetensors only; name the output <name>.safetensors", nameof(outputFile));
        options ??= new ModelConversionOptions();
        if (File.Exists(outputFile) && !options.Overwrite)
            throw new IOException($"{outputFile} already exists (set ModelConversionOptions.Overwrite to replace it)");
        using var loaded = Load(model, options);
        PipelineWriter.WriteSingleFile(loaded, outputFile, DType(options.DType));
        Log.ModelExported(options.Logger ?? NullLogger.Instance, model, Path.GetFullPath(outputFile));
    }

    /// <summary>Writes <paramref name="model"/> as a diffusers pipeline folder: configs, safetensors weights, tokenizer, scheduler and <c>model_index.json</c>.</summary>
    /// <param name="model">A diffusers folder, single-file checkpoint or hub id.</param>
    /// <param name="outputDirectory">The folder to write; it must be empty or not exist.</param>
    /// <param name="options">The weights' dtype, how the source is read, overwriting.</param>
    /// <exception cref="InvalidModelFileException">The source cannot be loaded.</exception>
    /// <exception cref="IOException">The folder holds files and <see cref="ModelConversionOptions.Overwrite"/> is off.</exception>
    public static void ToDiffusersFolder(string model, string outputDirectory, ModelConversionOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        options ??= new ModelConversionOptions();
        if (Directory.Exists(outputDirectory) && Directory.EnumerateFileSystemEntries(outputDirectory).Any() && !options.Overwrite)
            throw new IOException($"{outputDirectory} is not empty (set ModelConversionOptions.Overwrite to write into it)");
        using var loaded = Load(model, options);
        if (Path.GetFullPath(outputDirectory) == loaded.Source)
            throw new IOException($"{outputDirectory} is the model's own folder");
        PipelineWriter.WriteDiffusersFolder(loaded, outputDirectory, DType(options.DType));
        Log.ModelExported(options.Logger ?? NullLogger.Instance, model, Path.GetFullPath(outputDirectory));
    }

    private static StableDiffusionModel Load(string model, ModelConversionOptions options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(model);
        var logger = options.Logger ?? NullLogger.Instance;
        var dtype = DType(options.DType);
        var location = ModelLocation.Resolve(model, HubSettings.Resolve(options.Hub), options.Variant, logger);
        return StableDiffusionModel.Load(location, ModelLoadSettings.Uniform(CPU, dtype, logger, options.Variant), options.SingleFile);
    }

    private static ScalarType DType(ModelDType dtype) => dtype switch
    {
        ModelDType.Float16 => ScalarType.Float16,
        ModelDType.BFloat16 => ScalarType.BFloat16,
        _ => ScalarType.Float32,
    };
}

/// <summary>How <see cref="ModelConverter"/> reads a model and writes it.</summary>
public sealed record ModelConversionOptions
{
    /// <summary>The dtype of the written weights (the models are loaded in it, so fp16 halves the memory too).</summary>
    /// <value>The default value is <see cref="ModelDType.Float32"/>.</value>
    public ModelDType DType { get; init; } = ModelDType.Float32;

    /// <summary>The weight-file variant to read from a diffusers folder or hub repository ("fp16"), or null.</summary>
    public string? Variant { get; init; }

    /// <summary>How a hub id is resolved (downloads are off unless allowed here).</summary>
    public HubOptions Hub { get; init; } = new();

    /// <summary>How a single-file source is read.</summary>
    public SingleFileOptions SingleFile { get; init; } = new();

    /// <summary>Replace an existing output file, or write into a folder that is not empty.</summary>
    public bool Overwrite { get; init; }

    /// <summary>Where loading and writing are logged, or null.</summary>
    public ILogger? Logger { get; init; }
}
