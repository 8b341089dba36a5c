using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace StableLora.IO;

/// <summary>
/// One LoRA layer in format-neutral form: the attention projection it adapts (diffusers module path, e.g.
/// <c>down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q</c>), its <c>down</c> [rank, in] and <c>up</c>
/// [out, rank] weights, its alpha (scale = alpha / rank), and the file key it came from (for messages).
/// </summary>
internal sealed record LoraModuleWeights(string ModulePath, Tensor Down, Tensor Up, double Alpha, string SourceKey)
{
    public int Rank => (int)Down.shape[0];
}

/// <summary>Names of the UNet attention projections that StableLora's LoRA adapts, in every format's spelling.</summary>
internal static partial class LoraModulePaths
{
    public const string ProcessorSuffix = ".processor";

    /// <summary>The seed's processor attribute for each projection.</summary>
    public static readonly IReadOnlyDictionary<string, string> ProcessorAttribute = new Dictionary<string, string>
    {
        ["to_q"] = "to_q_lora", ["to_k"] = "to_k_lora", ["to_v"] = "to_v_lora", ["to_out.0"] = "to_out_lora",
    };

    /// <summary>True for <c>{down|up}_blocks.i.attentions.j.transformer_blocks.k.attn{1|2}.{to_q|to_k|to_v|to_out.0}</c> and the mid-block equivalent.</summary>
    public static bool IsAttentionProjection(string modulePath) => AttentionProjection().IsMatch(modulePath);

    /// <summary>Splits a module path into the processor name and the projection (<c>to_out.0</c>, ...).</summary>
    public static (string ProcessorName, string Projection) Split(string modulePath)
    {
        string projection = modulePath.EndsWith(".to_out.0", StringComparison.Ordinal) ? "to_out.0" : modulePath[(modulePath.LastIndexOf('.') + 1)..];
        return (modulePath[..^(projection.Length + 1)] + ProcessorSuffix, projection);
    }

    /// <summary>kohya's name: <c>lora_unet_</c> + the module path with dots as underscores.</summary>
    public static string ToKohya(string modulePath) => "lora_unet_" + modulePath.Replace('.', '_');

    /// <summary>The module path of a kohya module name, or null when it is not an attention projection.</summary>
    public static string? FromKohya(string kohyaName)
    {
        var match = KohyaAttentionProjection().Match(kohyaName);
        if (!match.Success)
            return null;
        string block = match.Groups["block"].Value == "mid_block"
            ? "mid_block"
            : $"{match.Groups["block"].Value}.{match.Groups["index"].Value}";
        string projection = match.Groups["projection"].Value == "to_out_0" ? "to_out.0" : match.Groups["projection"].Value;
        return $"{block}.attentions.{match.Groups["attention"].Value}.transformer_blocks.{match.Groups["transformer"].Value}.{match.Groups["attn"].Value}.{projection}";
    }

    [GeneratedRegex(@"^(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")]
    private static partial Regex AttentionProjection();

    [GeneratedRegex(@"^lora_unet_(?:(?<block>down_blocks|up_blocks)_(?<index>\d+)|(?<block>mid_block))_attentions_(?<attention>\d+)_transformer_blocks_(?<transformer>\d+)_(?<attn>attn[12])_(?<projection>to_q|to_k|to_v|to_out_0)$")]
    private static partial Regex KohyaAttentionProjection();
}
