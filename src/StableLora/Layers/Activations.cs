using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>The activation functions named in diffusers and transformers configs.</summary>
internal static class Activations
{
    public static readonly IReadOnlyList<string> Names = new[] { "silu", "swish", "gelu", "quick_gelu", "mish", "relu" };

    public static bool IsKnown(string? name) => name is not null && Names.Contains(name);

    public static Func<Tensor, Tensor> Get(string name) => name switch
    {
        "silu" or "swish" => x => nn.functional.silu(x),
        "gelu" => x => nn.functional.gelu(x),
        "quick_gelu" => x => x * sigmoid(x.Times(1.702)),
        "mish" => x => nn.functional.mish(x),
        "relu" => x => nn.functional.relu(x),
        _ => throw new ArgumentException($"unknown activation '{name}'", nameof(name)),
    };
}
