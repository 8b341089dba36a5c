using StableLora.Configuration;
using StableLora.Layers;

namespace StableLora.Vae;

/// <summary>The configuration of diffusers' <c>AutoencoderKL</c> (<c>vae/config.json</c>), with diffusers' defaults.</summary>
internal sealed record AutoencoderKLConfig
{
    public int InChannels { get; init; } = 3;
    public int OutChannels { get; init; } = 3;
    public int[] BlockOutChannels { get; init; } = { 64 };
    public int LayersPerBlock { get; init; } = 1;
    public string ActFn { get; init; } = "silu";
    public int LatentChannels { get; init; } = 4;
    public int NormNumGroups { get; init; } = 32;
    public int SampleSize { get; init; } = 32;
    public double ScalingFactor { get; init; } = 0.18215;

    /// <summary>How many pixels one latent covers along each side: 2^(blocks - 1) (8 for SD).</summary>
    public int ScaleFactor => 1 << (BlockOutChannels.Length - 1);

    public static AutoencoderKLConfig FromFile(string path) => FromReader(ConfigReader.FromFile(path));

    public static AutoencoderKLConfig FromJson(string json, string source) => FromReader(ConfigReader.FromJson(json, source));

    public static AutoencoderKLConfig FromReader(ConfigReader config)
    {
        var defaults = new AutoencoderKLConfig();
        var channels = config.IntList("block_out_channels", defaults.BlockOutChannels);
        if (channels.Length == 0 || channels.Any(c => c <= 0))
            throw config.Invalid("block_out_channels", "expected one or more positive channel counts");
        var down = config.StringList("down_block_types", Enumerable.Repeat("DownEncoderBlock2D", channels.Length).ToArray());
        var up = config.StringList("up_block_types", Enumerable.Repeat("UpDecoderBlock2D", channels.Length).ToArray());
        if (down.Length != channels.Length || down.Any(t => t != "DownEncoderBlock2D"))
            throw config.Invalid("down_block_types", $"expected {channels.Length} DownEncoderBlock2D entries (the SD VAE)");
        if (up.Length != channels.Length || up.Any(t => t != "UpDecoderBlock2D"))
            throw config.Invalid("up_block_types", $"expected {channels.Length} UpDecoderBlock2D entries (the SD VAE)");
        string act = config.String("act_fn", "silu")!;
        if (!Activations.IsKnown(act))
            throw config.Invalid("act_fn", $"expected one of {string.Join(", ", Activations.Names)}");
        config.RequireDefault("mid_block_add_attention", true, "the SD VAE has a mid-block attention");
        config.RequireDefault("use_quant_conv", true, "the SD VAE has quant_conv");
        config.RequireDefault("use_post_quant_conv", true, "the SD VAE has post_quant_conv");
        config.RequireDefault("latents_mean", null, "latent mean/std normalisation (SDXL-era VAEs) is not implemented");
        config.RequireDefault("latents_std", null, "latent mean/std normalisation (SDXL-era VAEs) is not implemented");
        config.RequireDefault("shift_factor", null, "a latent shift factor (SD3/Flux VAEs) is not implemented");

        var result = new AutoencoderKLConfig
        {
            InChannels = config.Int("in_channels", 3),
            OutChannels = config.Int("out_channels", 3),
            BlockOutChannels = channels,
            LayersPerBlock = config.Int("layers_per_block", 1),
            ActFn = act,
            LatentChannels = config.Int("latent_channels", 4),
            NormNumGroups = config.Int("norm_num_groups", 32),
            SampleSize = config.Int("sample_size", 32),
            ScalingFactor = config.Double("scaling_factor", 0.18215),
        };
        if (result.LayersPerBlock < 1)
            throw config.Invalid("layers_per_block", "expected at least one layer per block");
        if (channels.Any(c => c % result.NormNumGroups != 0))
            throw config.Invalid("norm_num_groups", "every block's channel count must be divisible by it");
        return result;
    }
}
