using System.Text.Json;

namespace StableLora.Pipeline;

/// <summary>
/// A diffusers pipeline folder: <c>model_index.json</c> names each component's library and class, and each component
/// lives in the sub-folder of the same name. Only the classes an SD 1.x/2.x text-to-image pipeline uses are accepted.
/// </summary>
internal sealed class ModelIndex
{
    public const string FileName = "model_index.json";

    private static readonly Dictionary<string, string[]> ExpectedClasses = new()
    {
        ["unet"] = new[] { "UNet2DConditionModel" },
        ["vae"] = new[] { "AutoencoderKL" },
        ["text_encoder"] = new[] { "CLIPTextModel" },
        ["tokenizer"] = new[] { "CLIPTokenizer", "CLIPTokenizerFast" },
    };

    private ModelIndex(string directory, string pipelineClass, IReadOnlyDictionary<string, string?> components)
    {
        Directory = directory;
        PipelineClass = pipelineClass;
        Components = components;
    }

    public string Directory { get; }

    public string PipelineClass { get; }

    /// <summary>Component name to class name (null for components saved as None, such as a disabled safety checker).</summary>
    public IReadOnlyDictionary<string, string?> Components { get; }

    public string ComponentDirectory(string component) => Path.Combine(Directory, component);

    public static ModelIndex Open(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
            throw new InvalidModelFileException(directory, null, "the model folder does not exist");
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
            throw new InvalidModelFileException(path, null,
                "not a diffusers model folder: model_index.json is missing (a single .safetensors/.ckpt checkpoint needs the single-file loader)");

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, null, $"not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(path, null, "model_index.json is not a JSON object");
            string pipelineClass = root.TryGetProperty("_class_name", out var cls) && cls.ValueKind == JsonValueKind.String ? cls.GetString()! : "";
            var components = new Dictionary<string, string?>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject().Where(p => !p.Name.StartsWith('_')))
            {
                if (property.Value.ValueKind != JsonValueKind.Array || property.Value.GetArrayLength() != 2)
                    continue;
                var className = property.Value[1];
                components[property.Name] = className.ValueKind == JsonValueKind.String ? className.GetString() : null;
            }

            foreach (var (component, accepted) in ExpectedClasses)
            {
                if (!components.TryGetValue(component, out var className) || className is null)
                    throw new InvalidModelFileException(path, component, "the pipeline has no such component; StableLora needs unet, vae, text_encoder, tokenizer and scheduler");
                if (!accepted.Contains(className))
                    throw new InvalidModelFileException(path, component, $"class {className} is not supported (expected {string.Join(" or ", accepted)})");
            }

            if (!components.TryGetValue("scheduler", out var scheduler) || scheduler is null)
                throw new InvalidModelFileException(path, "scheduler", "the pipeline has no scheduler component");

            return new ModelIndex(Path.GetFullPath(directory), pipelineClass, components);
        }
    }
}
