using System.Text.Json;
using StableLora.Configuration;
using StableLora.Pipeline;

namespace StableLora.SingleFile;

/// <summary>
/// An original LDM/CompVis inference yaml (<c>v1-inference.yaml</c>) turned into diffusers configs the way diffusers'
/// single-file converter does: the UNet from <c>model.params.unet_config.params</c> (block channels from
/// <c>model_channels x channel_mult</c>, cross-attention where the block's resolution divisor is in
/// <c>attention_resolutions</c>), the VAE from <c>first_stage_config.params.ddconfig</c> and <c>scale_factor</c>, the
/// scheduler as a PNDM with <c>linear_start</c>/<c>linear_end</c>/<c>timesteps</c> (v-prediction when
/// <c>parameterization: v</c>). The text encoder must be SD 1.x's CLIP (<c>FrozenCLIPEmbedder</c>); it and the tokenizer
/// are SD 1.5's.
/// </summary>
internal static class LdmOriginalConfig
{
    private const string Sd1TextEncoder = "FrozenCLIPEmbedder";

    public static PipelineConfigs Load(string path)
    {
        if (!File.Exists(path))
            throw new InvalidModelFileException(path, null, "the original config file does not exist");
        object? root;
        try
        {
            root = MiniYaml.Parse(File.ReadAllText(path), path);
        }
        catch (FormatException e)
        {
            throw new InvalidModelFileException(path, null, $"cannot read the YAML: {e.Message}", e);
        }

        var yaml = new Node(path, "", root);
        var model = yaml.Get("model").Get("params");
        if (!model.Has("unet_config"))
            throw new ModelConfigException(path, "model.params.unet_config", null,
                model.Has("network_config") ? "this is an SDXL config (network_config); StableLora supports SD 1.x" : "the config has no unet_config, so it is not an SD 1.x config");

        string textEncoder = model.Get("cond_stage_config").Get("target").String().Split('.')[^1];
        if (textEncoder != Sd1TextEncoder)
            throw new ModelConfigException(path, "model.params.cond_stage_config.target", textEncoder,
                textEncoder == "FrozenOpenCLIPEmbedder"
                    ? "this is a Stable Diffusion 2.x config (OpenCLIP text encoder); StableLora supports SD 1.x single-file checkpoints"
                    : $"StableLora supports the SD 1.x text encoder ({Sd1TextEncoder}) only");

        int latentSize = model.Has("image_size") ? model.Get("image_size").Int() : 64;
        return new PipelineConfigs(
            Unet(model.Get("unet_config").Get("params"), latentSize), $"{path} (model.params.unet_config)",
            Vae(model, latentSize), $"{path} (model.params.first_stage_config)",
            Sd15Presets.Json("text_encoder"), "built-in SD 1.5 text_encoder config",
            Scheduler(model), $"{path} (model.params)",
            TokenizerFiles.BuiltIn,
            $"original config {path}");
    }

    private static string Unet(Node unet, int latentSize)
    {
        if (unet.Has("use_spatial_transformer") && !unet.Get("use_spatial_transformer").Bool())
            throw unet.Get("use_spatial_transformer").Unsupported("a UNet without spatial transformers is not a Stable Diffusion UNet");
        if (unet.Has("num_classes"))
            throw unet.Get("num_classes").Unsupported("class-conditioned UNets (unCLIP, SDXL) are not supported");

        int modelChannels = unet.Get("model_channels").Int();
        int[] multipliers = unet.Get("channel_mult").IntList();
        int[] attentionResolutions = unet.Get("attention_resolutions").IntList();
        int[] channels = multipliers.Select(m => modelChannels * m).ToArray();

        var down = new List<string>();
        var up = new List<string>();
        int resolution = 1;
        for (int i = 0; i < channels.Length; i++)
        {
            down.Add(attentionResolutions.Contains(resolution) ? "CrossAttnDownBlock2D" : "DownBlock2D");
            if (i != channels.Length - 1)
                resolution *= 2;
        }

        for (int i = 0; i < channels.Length; i++)
        {
            up.Add(attentionResolutions.Contains(resolution) ? "CrossAttnUpBlock2D" : "UpBlock2D");
            resolution /= 2;
        }

        object heads;
        if (unet.Has("num_heads") && unet.Get("num_heads").Int() > 0)
            heads = unet.Get("num_heads").Int();
        else if (unet.Has("num_head_channels") && unet.Get("num_head_channels").Int() > 0)
        {
            int headChannels = unet.Get("num_head_channels").Int();
            heads = channels.Select(c => c / headChannels).ToArray();
        }
        else
            throw unet.Get("num_heads").Unsupported("neither num_heads nor num_head_channels is a positive number");

        var config = new Dictionary<string, object?>
        {
            ["_class_name"] = "UNet2DConditionModel",
            ["sample_size"] = latentSize,
            ["in_channels"] = unet.Get("in_channels").Int(),
            ["out_channels"] = unet.Get("out_channels").Int(),
            ["down_block_types"] = down,
            ["up_block_types"] = up,
            ["block_out_channels"] = channels,
            ["layers_per_block"] = unet.Get("num_res_blocks").IntOrIntList(),
            ["cross_attention_dim"] = unet.Get("context_dim").IntOrFirst(),
            ["attention_head_dim"] = heads,
            ["use_linear_projection"] = unet.Has("use_linear_in_transformer") && unet.Get("use_linear_in_transformer").Bool(),
            ["transformer_layers_per_block"] = unet.Has("transformer_depth") ? unet.Get("transformer_depth").IntOrIntList() : 1,
            ["upcast_attention"] = false,
        };
        return JsonSerializer.Serialize(config);
    }

    /// <summary>The VAE config; its sample size is the image size, the latent size times its downscaling factor.</summary>
    private static string Vae(Node model, int latentSize)
    {
        var first = model.Get("first_stage_config").Get("params");
        var dd = first.Get("ddconfig");
        if (dd.Has("double_z") && !dd.Get("double_z").Bool())
            throw dd.Get("double_z").Unsupported("the SD VAE encodes a mean and a variance (double_z: true)");
        if (dd.Has("attn_resolutions") && dd.Get("attn_resolutions").IntList().Length > 0)
            throw dd.Get("attn_resolutions").Unsupported("the SD VAE has attention in its middle block only");
        int zChannels = dd.Get("z_channels").Int();
        if (first.Has("embed_dim") && first.Get("embed_dim").Int() != zChannels)
            throw first.Get("embed_dim").Unsupported($"the SD VAE's embed_dim equals z_channels ({zChannels})");
        int ch = dd.Get("ch").Int();
        int[] channels = dd.Get("ch_mult").IntList().Select(m => ch * m).ToArray();
        var config = new Dictionary<string, object?>
        {
            ["_class_name"] = "AutoencoderKL",
            ["sample_size"] = latentSize << (channels.Length - 1),
            ["in_channels"] = dd.Get("in_channels").Int(),
            ["out_channels"] = dd.Get("out_ch").Int(),
            ["down_block_types"] = Enumerable.Repeat("DownEncoderBlock2D", channels.Length).ToArray(),
            ["up_block_types"] = Enumerable.Repeat("UpDecoderBlock2D", channels.Length).ToArray(),
            ["block_out_channels"] = channels,
            ["latent_channels"] = zChannels,
            ["layers_per_block"] = dd.Get("num_res_blocks").Int(),
            ["scaling_factor"] = model.Has("scale_factor") ? model.Get("scale_factor").Double() : 0.18215,
        };
        return JsonSerializer.Serialize(config);
    }

    private static string Scheduler(Node model)
    {
        // diffusers' converter builds a DDIM scheduler (with its defaults where the yaml is silent) and turns it into the
        // PNDM scheduler that SD pipelines ship with.
        double? Optional(string key) => model.Has(key) ? model.Get(key).Double() : null;
        var config = new Dictionary<string, object?>
        {
            ["_class_name"] = "PNDMScheduler",
            ["beta_start"] = Optional("linear_start") is { } start && start != 0 ? start : 0.02,
            ["beta_end"] = Optional("linear_end") is { } end && end != 0 ? end : 0.085,
            ["beta_schedule"] = "scaled_linear",
            ["num_train_timesteps"] = Optional("timesteps") is { } steps && steps != 0 ? (int)steps : 1000,
            ["steps_offset"] = 1,
            ["clip_sample"] = false,
            ["set_alpha_to_one"] = false,
            ["skip_prk_steps"] = true,
            ["prediction_type"] = model.Has("parameterization") && model.Get("parameterization").String() == "v" ? "v_prediction" : "epsilon",
            ["trained_betas"] = null,
        };
        return JsonSerializer.Serialize(config);
    }

    /// <summary>A node of the parsed yaml with its dotted path, for messages that name the key.</summary>
    private sealed record Node(string File, string Path, object? Value)
    {
        public bool Has(string key) => Value is Dictionary<string, object?> map && map.TryGetValue(key, out var v) && v is not YamlScalar { IsNull: true };

        public Node Get(string key)
        {
            string path = Path.Length == 0 ? key : $"{Path}.{key}";
            if (Value is not Dictionary<string, object?> map || !map.TryGetValue(key, out var value))
                throw new ModelConfigException(File, path, null, "the original config lacks this key");
            return new Node(File, path, value);
        }

        public string String() => Value is YamlScalar scalar ? scalar.Text : throw Unsupported("expected a single value");

        public int Int() => Value is YamlScalar scalar && scalar.TryGetLong(out long value) && value is >= int.MinValue and <= int.MaxValue
            ? (int)value : throw Unsupported("expected an integer");

        public double Double() => Value is YamlScalar scalar && scalar.TryGetDouble(out double value) ? value : throw Unsupported("expected a number");

        public bool Bool() => Value is YamlScalar scalar && scalar.TryGetBool(out bool value) ? value : throw Unsupported("expected true or false");

        public int[] IntList() => Value is List<object?> list
            ? list.Select((item, i) => new Node(File, $"{Path}[{i}]", item).Int()).ToArray()
            : throw Unsupported("expected a list of integers");

        public object IntOrIntList() => Value is List<object?> ? IntList() : Int();

        public int IntOrFirst() => Value is List<object?> ? IntList().FirstOrDefault() : Int();

        public ModelConfigException Unsupported(string message) =>
            new(File, Path, Value is YamlScalar scalar ? scalar.Text : Value is null ? null : "(a " + (Value is List<object?> ? "list" : "mapping") + ")", message);
    }
}
