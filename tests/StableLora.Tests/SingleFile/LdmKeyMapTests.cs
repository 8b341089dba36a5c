using System.Text.Json;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.SingleFile;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;
using static TorchSharp.torch;

namespace StableLora.Tests.SingleFile;

/// <summary>
/// The LDM names derived from the SD 1.5 configs reproduce every pair of the real v1-5 single-file key list
/// (diffusers' own converter's output: 1131 keys with shapes and the 8 VAE reshapes). Models built on the meta device.
/// </summary>
public sealed class LdmKeyMapTests
{
    private static readonly StableLora.Layers.TensorSpec Meta = new(META, ScalarType.Float32);

    [Fact]
    public void ReproducesEveryPairOfTheSd15SingleFileKeyList()
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FixturePaths.Sd15Keys, "ldm_single_file.json")));
        var expected = document.RootElement.GetProperty("state_dict").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value);
        Assert.Equal(1131, expected.Count);

        var ours = OursForSd15();
        Assert.Equal(1131, ours.Count);
        Assert.Empty(expected.Keys.Except(ours.Keys));
        Assert.Empty(ours.Keys.Except(expected.Keys));
        foreach (var (ldmKey, (component, diffusersKey, shape)) in ours)
        {
            var entry = expected[ldmKey];
            Assert.Equal(entry.GetProperty("component").GetString(), component);
            Assert.Equal(entry.GetProperty("diffusers_key").GetString(), diffusersKey);
            var ldmShape = entry.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            var diffusersShape = entry.TryGetProperty("diffusers_shape", out var d) ? d.EnumerateArray().Select(x => x.GetInt64()).ToArray() : ldmShape;
            Assert.Equal(diffusersShape, shape);
            Assert.Equal(entry.TryGetProperty("reshape", out _), LdmKeyMap.IsVaeConvAttentionWeight(ldmKey[LdmCheckpointLayout.VaePrefix.Length..]) && component == "vae");
        }

        var reshaped = document.RootElement.GetProperty("reshaped_keys").EnumerateArray().Select(k => k.GetString()!).ToList();
        Assert.Equal(8, reshaped.Count);
        Assert.Equal(reshaped.OrderBy(k => k), ours.Where(p => p.Value.Component == "vae" && LdmKeyMap.IsVaeConvAttentionWeight(p.Key)).Select(p => p.Key).OrderBy(k => k));
    }

    [Fact]
    public void MappingFollowsTheConfigNotSd15BlockCounts()
    {
        // Three blocks, one layer per block, attention only in the middle block: LDM numbering shifts accordingly.
        var config = UNet2DConditionConfig.FromJson("""
            {"block_out_channels": [32, 64, 64], "layers_per_block": 1, "norm_num_groups": 8, "cross_attention_dim": 32,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}
            """, "test config");
        var map = LdmKeyMap.ForUnet(config);
        Assert.Equal("input_blocks.1.0.in_layers.0.weight", map.ToLdm("down_blocks.0.resnets.0.norm1.weight"));
        Assert.Equal("input_blocks.2.0.op.weight", map.ToLdm("down_blocks.0.downsamplers.0.conv.weight"));
        Assert.Equal("input_blocks.3.1.proj_in.weight", map.ToLdm("down_blocks.1.attentions.0.proj_in.weight"));
        Assert.Equal("input_blocks.4.0.op.bias", map.ToLdm("down_blocks.1.downsamplers.0.conv.bias"));
        Assert.Equal("input_blocks.5.0.skip_connection.weight", map.ToLdm("down_blocks.2.resnets.0.conv_shortcut.weight"));
        Assert.Equal("output_blocks.1.1.conv.weight", map.ToLdm("up_blocks.0.upsamplers.0.conv.weight"));
        Assert.Equal("output_blocks.3.1.norm.weight", map.ToLdm("up_blocks.1.attentions.1.norm.weight"));
        Assert.Equal("output_blocks.3.2.conv.weight", map.ToLdm("up_blocks.1.upsamplers.0.conv.weight"));
        Assert.Equal("output_blocks.5.0.emb_layers.1.weight", map.ToLdm("up_blocks.2.resnets.1.time_emb_proj.weight"));
        Assert.Null(map.ToLdm("up_blocks.2.upsamplers.0.conv.weight"));

        using var unet = new UNet2DConditionModel(config, Meta);
        var names = unet.state_dict().Keys.Select(k => map.ToLdm(k)).ToList();
        Assert.DoesNotContain(null, names);
        Assert.Equal(names.Count, names.Distinct().Count());
    }

    [Fact]
    public void EmaKeysAreTheFlattenedUnetKeys()
    {
        Assert.Equal("model_ema.diffusion_modelinput_blocks00weight", LdmCheckpointLayout.EmaKey("model.diffusion_model.input_blocks.0.0.weight"));
        Assert.Equal("model_ema.diffusion_modeloutput_blocks51transformer_blocks0attn2to_kweight",
            LdmCheckpointLayout.EmaKey("model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"));
    }

    private static Dictionary<string, (string Component, string DiffusersKey, long[] Shape)> OursForSd15()
    {
        var ours = new Dictionary<string, (string, string, long[])>();
        using var unet = new UNet2DConditionModel(Sd15Presets.Unet, Meta);
        var unetMap = LdmKeyMap.ForUnet(Sd15Presets.Unet);
        foreach (var (key, tensor) in StateDicts.Ordered(unet))
            ours.Add(LdmCheckpointLayout.UnetPrefix + unetMap.ToLdm(key), ("unet", key, tensor.shape));
        using var vae = new AutoencoderKL(Sd15Presets.Vae, Meta);
        var vaeMap = LdmKeyMap.ForVae(Sd15Presets.Vae);
        foreach (var (key, tensor) in StateDicts.Ordered(vae))
            ours.Add(LdmCheckpointLayout.VaePrefix + vaeMap.ToLdm(key), ("vae", key, tensor.shape));
        using var textEncoder = new ClipTextModel(Sd15Presets.TextEncoder, Meta);
        foreach (var (key, tensor) in StateDicts.Ordered(textEncoder))
            ours.Add(LdmCheckpointLayout.TextEncoderPrefix + key, ("text_encoder", key, tensor.shape));
        return ours;
    }
}
