using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.IO;

/// <summary>How file keys relate to model keys beyond a name-for-name copy.</summary>
internal sealed record StateDictMapping
{
    public static StateDictMapping Identity { get; } = new();

    /// <summary>Model keys the file may lack (they keep their constructed value), e.g. CLIP's <c>position_ids</c>.</summary>
    public IReadOnlySet<string> OptionalModelKeys { get; init; } = new HashSet<string>();

    /// <summary>File keys that are not weights of this model and are skipped, e.g. an old <c>position_ids</c>.</summary>
    public Func<string, bool> IgnoreFileKey { get; init; } = _ => false;

    /// <summary>Maps a file key to the model key (legacy names); the identity by default.</summary>
    public Func<string, string> RenameFileKey { get; init; } = key => key;

    /// <summary>Whether a file tensor of another shape with the same elements may be reshaped into the model's (1x1 conv weights for Linear ones).</summary>
    public Func<string, long[], long[], bool> CanReshape { get; init; } = (_, _, _) => false;
}

/// <summary>
/// Strict, low-memory loading of a weights file into a model: every key is checked (names and shapes) before any
/// data is read; then tensors are read and copied one at a time, converting to the model's dtype and device, so no
/// second full copy of the weights ever exists.
/// </summary>
internal static class StateDictLoader
{
    public static void Load(nn.Module model, ITensorReader reader, StateDictMapping? mapping = null)
    {
        mapping ??= StateDictMapping.Identity;
        var targets = model.state_dict();
        var fileKeyOf = new Dictionary<string, string>(StringComparer.Ordinal);
        var missing = new List<string>();
        var unexpected = new List<string>();
        var misshaped = new List<string>();
        string? firstKey = null;

        foreach (var info in reader.Tensors)
        {
            if (mapping.IgnoreFileKey(info.Name))
                continue;
            string modelKey = mapping.RenameFileKey(info.Name);
            if (!targets.TryGetValue(modelKey, out var target))
            {
                unexpected.Add($"'{info.Name}' {info.ShapeText}");
                firstKey ??= info.Name;
                continue;
            }

            if (!fileKeyOf.TryAdd(modelKey, info.Name))
            {
                unexpected.Add($"'{info.Name}' (a second tensor for '{modelKey}')");
                firstKey ??= info.Name;
                continue;
            }

            if (!target.shape.SequenceEqual(info.Shape) && !mapping.CanReshape(modelKey, info.Shape, target.shape))
            {
                misshaped.Add($"'{info.Name}' is {info.ShapeText} in the file but {TensorInfo.FormatShape(target.shape)} in the model");
                firstKey ??= info.Name;
            }
            else if (TensorDTypes.IsFloatingPoint(target.dtype) && !TensorDTypes.IsFloatingPoint(info.DType))
            {
                misshaped.Add($"'{info.Name}' holds {TensorDTypes.Describe(info.DType)} values where the model has floating-point weights");
                firstKey ??= info.Name;
            }
        }

        foreach (var (key, target) in targets)
        {
            if (!fileKeyOf.ContainsKey(key) && !mapping.OptionalModelKeys.Contains(key))
            {
                missing.Add($"'{key}' {TensorInfo.FormatShape(target.shape)}");
                firstKey ??= key;
            }
        }

        if (missing.Count + unexpected.Count + misshaped.Count > 0)
            throw new StateDictMismatchException(reader.Path, missing, unexpected, misshaped, firstKey!);

        using var noGrad = no_grad();
        foreach (var (modelKey, fileKey) in fileKeyOf)
        {
            var target = targets[modelKey];
            using var loaded = reader.Read(fileKey);
            using var shaped = loaded.reshape(target.shape);
            target.copy_(shaped);
        }
    }
}
