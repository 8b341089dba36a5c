using StableLora.IO;

namespace StableLora.Vae;

/// <summary>
/// The VAE of the original SD 1.x diffusers repositories was saved by diffusers 0.6, which named the mid-block
/// attention <c>query</c>/<c>key</c>/<c>value</c>/<c>proj_attn</c>; today's names are <c>to_q</c>/<c>to_k</c>/<c>to_v</c>/<c>to_out.0</c>.
/// Some conversions also store those projections as 1x1 conv weights.
/// </summary>
internal static class VaeKeys
{
    private static readonly (string Old, string New)[] AttentionRenames =
    {
        (".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0."),
    };

    public static StateDictMapping LegacyMapping { get; } = new()
    {
        RenameFileKey = RenameLegacy,
        CanReshape = (key, fileShape, modelShape) => IsAttentionProjection(key) && fileShape.Length == 4
                                                     && fileShape[2] == 1 && fileShape[3] == 1
                                                     && fileShape[0] == modelShape[0] && fileShape[1] == modelShape[^1],
    };

    public static string RenameLegacy(string key)
    {
        if (!key.Contains(".mid_block.attentions.", StringComparison.Ordinal))
            return key;
        foreach (var (old, renamed) in AttentionRenames)
        {
            int at = key.LastIndexOf(old, StringComparison.Ordinal);
            if (at >= 0)
                return key[..at] + renamed + key[(at + old.Length)..];
        }

        return key;
    }

    private static bool IsAttentionProjection(string key) =>
        key.Contains(".mid_block.attentions.", StringComparison.Ordinal) && key.EndsWith(".weight", StringComparison.Ordinal)
        && (key.Contains(".to_q.") || key.Contains(".to_k.") || key.Contains(".to_v.") || key.Contains(".to_out.0."));
}
