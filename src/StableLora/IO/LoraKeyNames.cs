using System.Text.RegularExpressions;
using StableLora.Lora;

namespace StableLora.IO;

/// <summary>
/// How each LoRA file format names modules, converted to and from module keys (<see cref="ModuleKeys"/>). Only file
/// readers and writers use these names.
/// </summary>
internal static partial class LoraKeyNames
{
    public const string KohyaUnetPrefix = "lora_unet_";
    public const string KohyaTextEncoderPrefix = "lora_te_";

    /// <summary>diffusers' kohya export (and SDXL files) name the first text encoder <c>lora_te1_</c>.</summary>
    public const string KohyaTextEncoder1Prefix = "lora_te1_";

    public const string KohyaTextEncoder2Prefix = "lora_te2_";

    public const string ProcessorSuffix = ".processor";

    /// <summary>The attention-processor format's attribute for each attention projection.</summary>
    public static readonly IReadOnlyDictionary<string, string> ProcessorAttribute = new Dictionary<string, string>
    {
        ["to_q"] = "to_q_lora", ["to_k"] = "to_k_lora", ["to_v"] = "to_v_lora", ["to_out.0"] = "to_out_lora",
    };

    // The names of the diffusers UNet's and transformers CLIP's modules, for splitting kohya's underscore-joined paths.
    private static readonly string[] Segments =
    {
        "down_blocks", "up_blocks", "mid_block", "attentions", "resnets", "transformer_blocks", "attn1", "attn2", "to_q", "to_k",
        "to_v", "to_out", "proj_in", "proj_out", "ff", "net", "proj", "norm1", "norm2", "norm3", "conv1", "conv2", "conv_shortcut",
        "time_emb_proj", "downsamplers", "upsamplers", "conv", "conv_in", "conv_out", "conv_norm_out", "time_embedding", "linear_1",
        "linear_2", "text_model", "encoder", "layers", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "mlp", "fc1", "fc2",
        "embeddings", "token_embedding", "position_embedding", "final_layer_norm", "layer_norm1", "layer_norm2",
    };

    private static readonly string[] SegmentsLongestFirst = Segments.OrderByDescending(s => s.Length).ToArray();

    /// <summary>kohya's module name: <c>lora_unet_</c> or <c>lora_te_</c> + the module path with dots as underscores.</summary>
    public static string ToKohya(string key) =>
        (ModuleKeys.IsTextEncoder(key) ? KohyaTextEncoderPrefix : KohyaUnetPrefix) + ModuleKeys.PathOf(key).Replace('.', '_');

    /// <summary>The module key of a kohya module name (SD 1.x/2.x naming), or null when the name is not one.</summary>
    public static string? FromKohya(string name)
    {
        string component;
        string rest;
        if (name.StartsWith(KohyaUnetPrefix, StringComparison.Ordinal))
            (component, rest) = (ModuleKeys.Unet, name[KohyaUnetPrefix.Length..]);
        else if (name.StartsWith(KohyaTextEncoderPrefix, StringComparison.Ordinal))
            (component, rest) = (ModuleKeys.TextEncoder, name[KohyaTextEncoderPrefix.Length..]);
        else if (name.StartsWith(KohyaTextEncoder1Prefix, StringComparison.Ordinal))
            (component, rest) = (ModuleKeys.TextEncoder, name[KohyaTextEncoder1Prefix.Length..]);
        else
            return null;
        return SplitUnderscored(rest) is { } path ? $"{component}.{path}" : null;
    }

    /// <summary>Splits <c>down_blocks_0_attentions_0_proj_in</c> into <c>down_blocks.0.attentions.0.proj_in</c> by the known module names.</summary>
    private static string? SplitUnderscored(string text)
    {
        var parts = new List<string>();
        int position = 0;
        while (position < text.Length)
        {
            string? segment = null;
            foreach (string candidate in SegmentsLongestFirst)
            {
                if (string.CompareOrdinal(text, position, candidate, 0, candidate.Length) == 0
                    && (position + candidate.Length == text.Length || text[position + candidate.Length] == '_'))
                {
                    segment = candidate;
                    break;
                }
            }

            if (segment is null)
            {
                var digits = Digits().Match(text, position);
                if (!digits.Success || digits.Index != position)
                    return null;
                segment = digits.Value;
            }

            parts.Add(segment);
            position += segment.Length + 1;
        }

        return parts.Count == 0 ? null : string.Join('.', parts);
    }

    /// <summary>True for a UNet attention projection key (<c>unet.…transformer_blocks.k.attn{1|2}.{to_q|to_k|to_v|to_out.0}</c>).</summary>
    public static bool IsAttentionProjection(string key) => AttentionProjection().IsMatch(key);

    /// <summary>The attention-processor format's key prefix of a UNet attention projection: <c>…attn1.processor.to_q_lora</c>.</summary>
    public static string ToAttnProcs(string key)
    {
        string path = ModuleKeys.PathOf(key);
        string projection = path.EndsWith(".to_out.0", StringComparison.Ordinal) ? "to_out.0" : path[(path.LastIndexOf('.') + 1)..];
        return $"{path[..^(projection.Length + 1)]}{ProcessorSuffix}.{ProcessorAttribute[projection]}";
    }

    /// <summary>The module key of an attention-processor <c>…processor.to_q_lora</c> prefix (with or without <c>unet.</c>), or null.</summary>
    public static string? FromAttnProcs(string prefix)
    {
        string name = prefix.StartsWith("unet.", StringComparison.Ordinal) ? prefix["unet.".Length..] : prefix;
        foreach (var (projection, attribute) in ProcessorAttribute)
        {
            string tail = $"{ProcessorSuffix}.{attribute}";
            if (name.EndsWith(tail, StringComparison.Ordinal))
                return ModuleKeys.ForUnet($"{name[..^tail.Length]}.{projection}");
        }

        return null;
    }

    /// <summary>The module key of a diffusers / PEFT module name (<c>unet.</c>, <c>text_encoder.</c>, <c>base_model.model.</c> or none: the UNet).</summary>
    public static string FromDiffusers(string name)
    {
        if (name.StartsWith("text_encoder.", StringComparison.Ordinal))
            return name;
        foreach (var prefix in new[] { "unet.", "base_model.model." })
        {
            if (name.StartsWith(prefix, StringComparison.Ordinal))
                return ModuleKeys.ForUnet(name[prefix.Length..]);
        }

        return ModuleKeys.ForUnet(name);
    }

    /// <summary>The diffusers / PEFT module name of a key: the key itself (<c>unet.…</c>, <c>text_encoder.…</c>).</summary>
    public static string ToDiffusers(string key) => key;

    [GeneratedRegex(@"\G\d+")]
    private static partial Regex Digits();

    [GeneratedRegex(@"^unet\.(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")]
    private static partial Regex AttentionProjection();
}
