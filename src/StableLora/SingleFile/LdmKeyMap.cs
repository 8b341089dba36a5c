using StableLora.Pipeline;
using StableLora.Unet;
using StableLora.Vae;

namespace StableLora.SingleFile;

/// <summary>
/// The names the original LDM/CompVis code gives a model's tensors, derived from the diffusers config (block counts,
/// layers per block, which blocks have attention), so fine-tunes and smaller variants map as SD 1.5 does. A diffusers
/// key is mapped by its module prefix (<c>down_blocks.1.resnets.0.</c> to <c>input_blocks.4.0.</c>), then, inside
/// resnets and the VAE's attention, by the layer's own name (<c>norm1</c> to <c>in_layers.0</c>).
/// </summary>
internal sealed class LdmKeyMap
{
    private static readonly IReadOnlyDictionary<string, string> UnetResnet = new Dictionary<string, string>
    {
        ["norm1"] = "in_layers.0",
        ["conv1"] = "in_layers.2",
        ["time_emb_proj"] = "emb_layers.1",
        ["norm2"] = "out_layers.0",
        ["conv2"] = "out_layers.3",
        ["conv_shortcut"] = "skip_connection",
    };

    private static readonly IReadOnlyDictionary<string, string> VaeResnet = new Dictionary<string, string>
    {
        ["norm1"] = "norm1",
        ["conv1"] = "conv1",
        ["norm2"] = "norm2",
        ["conv2"] = "conv2",
        ["conv_shortcut"] = "nin_shortcut",
    };

    private static readonly IReadOnlyDictionary<string, string> VaeAttention = new Dictionary<string, string>
    {
        ["group_norm"] = "norm",
        ["to_q"] = "q",
        ["to_k"] = "k",
        ["to_v"] = "v",
        ["to_out.0"] = "proj_out",
    };

    private readonly Dictionary<string, Rule> _rules = new(StringComparer.Ordinal);

    private LdmKeyMap()
    {
    }

    /// <summary>The LDM name of a diffusers key (without the component's prefix), or null when the layout has none.</summary>
    public string? ToLdm(string diffusersKey)
    {
        for (int dot = diffusersKey.IndexOf('.'); dot >= 0; dot = diffusersKey.IndexOf('.', dot + 1))
        {
            if (_rules.TryGetValue(diffusersKey[..(dot + 1)], out var rule))
                return rule.Map(diffusersKey[(dot + 1)..]);
        }

        return null;
    }

    /// <summary>The UNet's layout (<c>model.diffusion_model.*</c>): <c>input_blocks</c>, <c>middle_block</c>, <c>output_blocks</c>.</summary>
    public static LdmKeyMap ForUnet(UNet2DConditionConfig config)
    {
        var map = new LdmKeyMap();
        int blocks = config.BlockOutChannels.Length;
        map.Add("conv_in.", "input_blocks.0.0.");
        map.Add("time_embedding.linear_1.", "time_embed.0.");
        map.Add("time_embedding.linear_2.", "time_embed.2.");

        int input = 1;
        for (int i = 0; i < blocks; i++)
        {
            bool attention = config.DownBlockTypes[i].StartsWith("CrossAttn", StringComparison.Ordinal);
            for (int j = 0; j < config.LayersPerBlock[i]; j++, input++)
            {
                map.Add($"down_blocks.{i}.resnets.{j}.", $"input_blocks.{input}.0.", UnetResnet);
                if (attention)
                    map.Add($"down_blocks.{i}.attentions.{j}.", $"input_blocks.{input}.1.");
            }

            if (i < blocks - 1)
                map.Add($"down_blocks.{i}.downsamplers.0.conv.", $"input_blocks.{input++}.0.op.");
        }

        map.Add("mid_block.resnets.0.", "middle_block.0.", UnetResnet);
        map.Add("mid_block.attentions.0.", "middle_block.1.");
        map.Add("mid_block.resnets.1.", "middle_block.2.", UnetResnet);

        int output = 0;
        for (int i = 0; i < blocks; i++)
        {
            bool attention = config.UpBlockTypes[i].StartsWith("CrossAttn", StringComparison.Ordinal);
            int layers = config.LayersPerBlock[blocks - 1 - i] + 1;
            for (int j = 0; j < layers; j++, output++)
            {
                map.Add($"up_blocks.{i}.resnets.{j}.", $"output_blocks.{output}.0.", UnetResnet);
                if (attention)
                    map.Add($"up_blocks.{i}.attentions.{j}.", $"output_blocks.{output}.1.");
                if (j == layers - 1 && i < blocks - 1)
                    map.Add($"up_blocks.{i}.upsamplers.0.conv.", $"output_blocks.{output}.{(attention ? 2 : 1)}.conv.");
            }
        }

        map.Add("conv_norm_out.", "out.0.");
        map.Add("conv_out.", "out.2.");
        return map;
    }

    /// <summary>The VAE's layout (<c>first_stage_model.*</c>): <c>encoder.down.N.block.M</c>, <c>decoder.up.N</c> in reverse order, <c>mid.attn_1</c>.</summary>
    public static LdmKeyMap ForVae(AutoencoderKLConfig config)
    {
        var map = new LdmKeyMap();
        int blocks = config.BlockOutChannels.Length;
        foreach (string part in new[] { "encoder", "decoder" })
        {
            map.Add($"{part}.conv_in.", $"{part}.conv_in.");
            map.Add($"{part}.conv_out.", $"{part}.conv_out.");
            map.Add($"{part}.conv_norm_out.", $"{part}.norm_out.");
            map.Add($"{part}.mid_block.resnets.0.", $"{part}.mid.block_1.", VaeResnet);
            map.Add($"{part}.mid_block.resnets.1.", $"{part}.mid.block_2.", VaeResnet);
            map.Add($"{part}.mid_block.attentions.0.", $"{part}.mid.attn_1.", VaeAttention);
        }

        for (int i = 0; i < blocks; i++)
        {
            for (int j = 0; j < config.LayersPerBlock; j++)
                map.Add($"encoder.down_blocks.{i}.resnets.{j}.", $"encoder.down.{i}.block.{j}.", VaeResnet);
            if (i < blocks - 1)
                map.Add($"encoder.down_blocks.{i}.downsamplers.0.conv.", $"encoder.down.{i}.downsample.conv.");

            int level = blocks - 1 - i;
            for (int j = 0; j < config.LayersPerBlock + 1; j++)
                map.Add($"decoder.up_blocks.{i}.resnets.{j}.", $"decoder.up.{level}.block.{j}.", VaeResnet);
            if (i < blocks - 1)
                map.Add($"decoder.up_blocks.{i}.upsamplers.0.conv.", $"decoder.up.{level}.upsample.conv.");
        }

        map.Add("quant_conv.", "quant_conv.");
        map.Add("post_quant_conv.", "post_quant_conv.");
        return map;
    }

    /// <summary>Whether an LDM VAE key is one of the mid-block attention projections that LDM stores as 1x1 conv weights.</summary>
    public static bool IsVaeConvAttentionWeight(string ldmKey) =>
        ldmKey.Contains(".mid.attn_1.", StringComparison.Ordinal)
        && (ldmKey.EndsWith(".q.weight", StringComparison.Ordinal) || ldmKey.EndsWith(".k.weight", StringComparison.Ordinal)
            || ldmKey.EndsWith(".v.weight", StringComparison.Ordinal) || ldmKey.EndsWith(".proj_out.weight", StringComparison.Ordinal));

    private void Add(string diffusersPrefix, string ldmPrefix, IReadOnlyDictionary<string, string>? layerNames = null) =>
        _rules.Add(diffusersPrefix, new Rule(ldmPrefix, layerNames));

    private sealed record Rule(string LdmPrefix, IReadOnlyDictionary<string, string>? LayerNames)
    {
        public string? Map(string rest)
        {
            if (LayerNames is null)
                return LdmPrefix + rest;
            int dot = rest.LastIndexOf('.');
            if (dot <= 0 || !LayerNames.TryGetValue(rest[..dot], out var layer))
                return null;
            return LdmPrefix + layer + rest[dot..];
        }
    }
}
