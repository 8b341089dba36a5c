namespace StableLora.Lora;

/// <summary>
/// The one naming of adapted modules in memory: the component, then the module's path inside it, exactly as the
/// diffusers / transformers state-dict keys name it (<c>unet.down_blocks.0.attentions.0.proj_in</c>,
/// <c>text_encoder.text_model.encoder.layers.0.self_attn.q_proj</c>). File formats convert to and from it at their
/// boundary (IO).
/// </summary>
internal static class ModuleKeys
{
    public const string Unet = "unet";
    public const string TextEncoder = "text_encoder";

    public static string ForUnet(string modulePath) => $"{Unet}.{modulePath}";

    public static string ForTextEncoder(string modulePath) => $"{TextEncoder}.{modulePath}";

    public static bool IsUnet(string key) => key.StartsWith(Unet + ".", StringComparison.Ordinal);

    public static bool IsTextEncoder(string key) => key.StartsWith(TextEncoder + ".", StringComparison.Ordinal);

    /// <summary>The module path inside its component (<c>down_blocks.0.attentions.0.proj_in</c>).</summary>
    public static string PathOf(string key) => key[(key.IndexOf('.', StringComparison.Ordinal) + 1)..];

    public static string ComponentOf(string key) => key[..key.IndexOf('.', StringComparison.Ordinal)];
}
