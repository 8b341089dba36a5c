using StableLora.Configuration;
using StableLora.Layers;

namespace StableLora.Unet;

/// <summary>
/// The configuration of a <see cref="UNet2DConditionModel"/>, as diffusers' <c>unet/config.json</c> writes it, with
/// diffusers' defaults for missing keys. Only the SD 1.x / 2.x architecture is implemented; any other value of a
/// key that changes the architecture is refused with the key and value named.
/// </summary>
internal sealed record UNet2DConditionConfig
{
    public int SampleSize { get; init; } = 64;
    public int InChannels { get; init; } = 4;
    public int OutChannels { get; init; } = 4;
    public bool CenterInputSample { get; init; }
    public bool FlipSinToCos { get; init; } = true;
    public int FreqShift { get; init; }
    public string[] DownBlockTypes { get; init; } = { "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D" };
    public string[] UpBlockTypes { get; init; } = { "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D" };
    public int[] BlockOutChannels { get; init; } = { 320, 640, 1280, 1280 };
    public int[] LayersPerBlock { get; init; } = { 2, 2, 2, 2 };
    public int[] TransformerLayersPerBlock { get; init; } = { 1, 1, 1, 1 };
    public int DownsamplePadding { get; init; } = 1;
    public double MidBlockScaleFactor { get; init; } = 1.0;
    public double Dropout { get; init; }
    public string ActFn { get; init; } = "silu";
    public int NormNumGroups { get; init; } = 32;
    public double NormEps { get; init; } = 1e-5;
    public int CrossAttentionDim { get; init; } = 1280;

    /// <summary>Heads per block (down order). SD 1.x configs give this as <c>attention_head_dim</c>: diffusers reads it as the head count.</summary>
    public int[] AttentionHeads { get; init; } = { 8, 8, 8, 8 };
    public bool UseLinearProjection { get; init; }
    public bool UpcastAttention { get; init; }
    public double ResnetOutScaleFactor { get; init; } = 1.0;
    public int ConvInKernel { get; init; } = 3;
    public int ConvOutKernel { get; init; } = 3;
    public int? TimeEmbeddingDim { get; init; }
    public string? TimestepPostAct { get; init; }

    public int TimeEmbedDim => TimeEmbeddingDim ?? BlockOutChannels[0] * 4;

    /// <summary>How many times the UNet halves the latent size (the up blocks' upsamplers).</summary>
    public int Downsamplings => BlockOutChannels.Length - 1;

    public static UNet2DConditionConfig FromFile(string path) => FromReader(ConfigReader.FromFile(path));

    public static UNet2DConditionConfig FromJson(string json, string source) => FromReader(ConfigReader.FromJson(json, source));

    public static UNet2DConditionConfig FromReader(ConfigReader config)
    {
        var defaults = new UNet2DConditionConfig();
        var blockOut = config.IntList("block_out_channels", defaults.BlockOutChannels);
        int blocks = blockOut.Length;
        if (blocks == 0 || blockOut.Any(c => c <= 0))
            throw config.Invalid("block_out_channels", "expected one or more positive channel counts");

        var downTypes = config.StringList("down_block_types", defaults.DownBlockTypes);
        var upTypes = config.StringList("up_block_types", defaults.UpBlockTypes);
        if (downTypes.Length != blocks)
            throw config.Invalid("down_block_types", $"expected {blocks} entries, one per block_out_channels entry");
        if (upTypes.Length != blocks)
            throw config.Invalid("up_block_types", $"expected {blocks} entries, one per block_out_channels entry");
        foreach (var type in downTypes.Where(t => t is not ("CrossAttnDownBlock2D" or "DownBlock2D")))
            throw new ModelConfigException(config.Source, "down_block_types", type, "only CrossAttnDownBlock2D and DownBlock2D (the SD 1.x/2.x blocks) are implemented");
        foreach (var type in upTypes.Where(t => t is not ("CrossAttnUpBlock2D" or "UpBlock2D")))
            throw new ModelConfigException(config.Source, "up_block_types", type, "only CrossAttnUpBlock2D and UpBlock2D (the SD 1.x/2.x blocks) are implemented");

        if (config.Has("cross_attention_dim") && config.RawText("cross_attention_dim")!.TrimStart().StartsWith('['))
            throw config.Invalid("cross_attention_dim", "a per-block cross-attention dim is not implemented");
        if (config.RawText("norm_num_groups") == "null")
            throw config.Invalid("norm_num_groups", "a UNet without output normalisation is not implemented");

        var attentionHeadDim = config.IntOrIntList("attention_head_dim", blocks) ?? Enumerable.Repeat(8, blocks).ToArray();
        var heads = config.IntOrIntList("num_attention_heads", blocks) ?? attentionHeadDim;

        string act = config.String("act_fn", "silu")!;
        if (!Activations.IsKnown(act))
            throw config.Invalid("act_fn", $"expected one of {string.Join(", ", Activations.Names)}");
        string? postAct = config.String("timestep_post_act", null);
        if (postAct is not null && !Activations.IsKnown(postAct))
            throw config.Invalid("timestep_post_act", $"expected null or one of {string.Join(", ", Activations.Names)}");

        RejectUnimplemented(config);

        var result = new UNet2DConditionConfig
        {
            SampleSize = config.Int("sample_size", defaults.SampleSize),
            InChannels = config.Int("in_channels", defaults.InChannels),
            OutChannels = config.Int("out_channels", defaults.OutChannels),
            CenterInputSample = config.Bool("center_input_sample", false),
            FlipSinToCos = config.Bool("flip_sin_to_cos", true),
            FreqShift = config.Int("freq_shift", 0),
            DownBlockTypes = downTypes,
            UpBlockTypes = upTypes,
            BlockOutChannels = blockOut,
            LayersPerBlock = config.IntOrIntList("layers_per_block", blocks) ?? Enumerable.Repeat(2, blocks).ToArray(),
            TransformerLayersPerBlock = config.IntOrIntList("transformer_layers_per_block", blocks) ?? Enumerable.Repeat(1, blocks).ToArray(),
            DownsamplePadding = config.Int("downsample_padding", 1),
            MidBlockScaleFactor = config.Double("mid_block_scale_factor", 1.0),
            Dropout = config.Double("dropout", 0.0),
            ActFn = act,
            NormNumGroups = config.Int("norm_num_groups", 32),
            NormEps = config.Double("norm_eps", 1e-5),
            CrossAttentionDim = config.Int("cross_attention_dim", 1280),
            AttentionHeads = heads,
            UseLinearProjection = config.Bool("use_linear_projection", false),
            UpcastAttention = config.Bool("upcast_attention", false),
            ResnetOutScaleFactor = config.Double("resnet_out_scale_factor", 1.0),
            ConvInKernel = config.Int("conv_in_kernel", 3),
            ConvOutKernel = config.Int("conv_out_kernel", 3),
            TimeEmbeddingDim = config.NullableInt("time_embedding_dim"),
            TimestepPostAct = postAct,
        };
        result.Validate(config);
        return result;
    }

    private void Validate(ConfigReader config)
    {
        for (int i = 0; i < BlockOutChannels.Length; i++)
        {
            if (BlockOutChannels[i] % NormNumGroups != 0)
                throw config.Invalid("norm_num_groups", $"{BlockOutChannels[i]} channels (block {i}) are not divisible into {NormNumGroups} groups");
            if (AttentionHeads[i] <= 0 || BlockOutChannels[i] % AttentionHeads[i] != 0)
                throw config.Invalid("attention_head_dim", $"{BlockOutChannels[i]} channels (block {i}) cannot be split into {AttentionHeads[i]} heads");
        }

        if (LayersPerBlock.Any(n => n < 1))
            throw config.Invalid("layers_per_block", "expected at least one layer per block");
        if (TransformerLayersPerBlock.Any(n => n < 1))
            throw config.Invalid("transformer_layers_per_block", "expected at least one transformer layer per block");
        if (ConvInKernel % 2 == 0)
            throw config.Invalid("conv_in_kernel", "expected an odd kernel size");
        if (ConvOutKernel % 2 == 0)
            throw config.Invalid("conv_out_kernel", "expected an odd kernel size");
        if (DownsamplePadding is < 0 or > 1)
            throw config.Invalid("downsample_padding", "expected 0 or 1");
    }

    /// <summary>Keys of diffusers' UNet2DConditionModel that switch on architectures StableLora does not implement.</summary>
    private static void RejectUnimplemented(ConfigReader config)
    {
        const string Sd = "StableLora implements the SD 1.x/2.x UNet only";
        config.RequireDefault("mid_block_type", "UNetMidBlock2DCrossAttn", Sd);
        config.RequireDefault("only_cross_attention", false, Sd);
        config.RequireDefault("mid_block_only_cross_attention", false, Sd);
        config.RequireDefault("dual_cross_attention", false, Sd);
        config.RequireDefault("class_embed_type", null, Sd);
        config.RequireDefault("num_class_embeds", null, Sd);
        config.RequireDefault("addition_embed_type", null, Sd);
        config.RequireDefault("addition_time_embed_dim", null, Sd);
        config.RequireDefault("projection_class_embeddings_input_dim", null, Sd);
        config.RequireDefault("class_embeddings_concat", false, Sd);
        config.RequireDefault("encoder_hid_dim", null, Sd);
        config.RequireDefault("encoder_hid_dim_type", null, Sd);
        config.RequireDefault("time_embedding_type", "positional", Sd);
        config.RequireDefault("time_embedding_act_fn", null, Sd);
        config.RequireDefault("time_cond_proj_dim", null, Sd);
        config.RequireDefault("resnet_time_scale_shift", "default", Sd);
        config.RequireDefault("resnet_skip_time_act", false, Sd);
        config.RequireDefault("cross_attention_norm", null, Sd);
        config.RequireDefault("attention_type", "default", Sd);
        config.RequireDefault("reverse_transformer_layers_per_block", null, Sd);
    }
}
