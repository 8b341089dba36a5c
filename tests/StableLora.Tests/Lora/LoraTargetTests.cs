using System.Text.Json;
using System.Text.RegularExpressions;
using StableLora.IO;
using StableLora.Layers;
using StableLora.Lora;
using StableLora.Pipeline;
using StableLora.TextEncoder;
using StableLora.Tests.Infrastructure;
using StableLora.Unet;
using static TorchSharp.torch;

namespace StableLora.Tests.Lora;

/// <summary>
/// Which SD 1.5 layers each preset adapts, checked against the real model's key lists (sd15-keys, written by diffusers
/// and transformers): the module sets are derived from those lists here with kohya's rules, independently of the
/// model classes.
/// </summary>
public sealed class LoraTargetTests : IDisposable
{
    private static readonly TensorSpec Meta = new(META, ScalarType.Float32);
    private readonly UNet2DConditionModel _unet = new(Sd15Presets.Unet, Meta);
    private readonly ClipTextModel _textEncoder = new(Sd15Presets.TextEncoder, Meta);

    public void Dispose()
    {
        _unet.Dispose();
        _textEncoder.Dispose();
    }

    [Fact]
    public void KohyaPresetAdaptsTheLinearAndConvolutionLayersOfEveryTransformer2DModel()
    {
        var expected = LayerPaths("unet.json", @"\.attentions\.\d+\.").Select(ModuleKeys.ForUnet).ToList();
        Assert.Equal(192, expected.Count);
        var targets = Select(new LoraNetworkOptions { Preset = LoraPreset.Kohya, Rank = 8, Alpha = 1 });
        Assert.Equal(expected.Order(StringComparer.Ordinal), targets.Select(t => t.Module.Key).Order(StringComparer.Ordinal));
        Assert.All(targets, t => Assert.Equal((8, 1.0, LoraInitialization.Kohya), (t.Settings.Rank, t.Settings.Alpha, t.Initialization)));
    }

    [Fact]
    public void ConvRankAddsTheResnetAndSamplerConvolutionsWithKohyasRankRule()
    {
        var convSet = LayerPaths("unet.json", @"\.(resnets\.\d+|downsamplers\.0|upsamplers\.0)\.").Select(ModuleKeys.ForUnet).ToList();
        Assert.Equal(86, convSet.Count);
        var shapes = Shapes("unet.json");
        var targets = Select(new LoraNetworkOptions { Preset = LoraPreset.Kohya, Rank = 8, Alpha = 4, ConvRank = 2, ConvAlpha = 1 });
        var convTargets = targets.Where(t => convSet.Contains(t.Module.Key)).ToList();
        Assert.Equal(192 + 86, targets.Count);
        Assert.Equal(86, convTargets.Count);
        foreach (var target in convTargets)
        {
            // kohya: a 3x3 convolution takes conv_dim / conv_alpha; 1x1 conv_shortcut and time_emb_proj the network's.
            bool spatial = shapes[ModuleKeys.PathOf(target.Module.Key)] is { Length: 4 } shape && shape[3] == 3;
            Assert.Equal(spatial ? (2, 1.0) : (8, 4.0), (target.Settings.Rank, target.Settings.Alpha));
        }

        Assert.Equal(50, convTargets.Count(t => t.Settings.Rank == 2));
        Assert.Equal(36, convTargets.Count(t => t.Settings.Rank == 8));
    }

    [Fact]
    public void TextEncoderLoraAdaptsEveryAttentionAndMlpLinearAtItsOwnRank()
    {
        var expected = LayerPaths("text_encoder.json", @"\.layers\.\d+\.(self_attn|mlp)\.").Select(ModuleKeys.ForTextEncoder).ToList();
        Assert.Equal(72, expected.Count);
        var targets = Select(new LoraNetworkOptions { Preset = LoraPreset.Attention, Rank = 4, TextEncoder = true, TextEncoderRank = 2 });
        var textEncoder = targets.Where(t => ModuleKeys.IsTextEncoder(t.Module.Key)).ToList();
        Assert.Equal(expected.Order(StringComparer.Ordinal), textEncoder.Select(t => t.Module.Key).Order(StringComparer.Ordinal));
        Assert.All(textEncoder, t => Assert.Equal((2, 2.0), (t.Settings.Rank, t.Settings.Alpha)));
        Assert.Equal(128, targets.Count - textEncoder.Count);
        Assert.DoesNotContain(Select(new LoraNetworkOptions { Preset = LoraPreset.Kohya }), t => ModuleKeys.IsTextEncoder(t.Module.Key));
    }

    [Fact]
    public void AttentionPresetKeepsTheSeedsModulesInTheSeedsOrder()
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FixturePaths.Sd15Keys, "lora_keys.json")));
        var seedModules = document.RootElement.GetProperty("state_dict").EnumerateObject()
            .Select(e => e.Value.GetProperty("module").GetString()!).Distinct().Select(ModuleKeys.ForUnet).ToList();
        var targets = Select(new LoraNetworkOptions());
        Assert.Equal(seedModules, targets.Select(t => t.Module.Key));
        Assert.All(targets, t => Assert.Equal(LoraInitialization.Seed, t.Initialization));
    }

    [Fact]
    public void PatternsAreGlobsOverModulePaths()
    {
        var crossKeys = Select(new LoraNetworkOptions { TargetPatterns = new[] { "*.attn2.to_k", "*.attn2.to_v" } });
        Assert.Equal(32, crossKeys.Count);
        Assert.All(crossKeys, t => Assert.Matches(@"\.attn2\.to_[kv]$", t.Module.Key));

        var upConvs = Select(new LoraNetworkOptions { TargetPatterns = new[] { "up_blocks.?.resnets.*.conv?" }, ConvRank = 2 });
        Assert.Equal(24, upConvs.Count);
        Assert.All(upConvs, t => Assert.Equal(2, t.Settings.Rank));
        Assert.Empty(Select(new LoraNetworkOptions { TargetPatterns = new[] { "no_such_block.*" } }));
    }

    [Fact]
    public void EveryAdaptableModuleHasTheKohyaNameThatMapsBackToIt()
    {
        var models = new AdaptableModels(_unet, _textEncoder);
        foreach (var module in models.Modules)
        {
            string kohya = LoraKeyNames.ToKohya(module.Key);
            Assert.Equal(module.Key, LoraKeyNames.FromKohya(kohya));
            Assert.Matches("^lora_(unet|te)_[a-z0-9_]+$", kohya);
        }

        Assert.Equal("lora_te_text_model_encoder_layers_0_mlp_fc1", LoraKeyNames.ToKohya("text_encoder.text_model.encoder.layers.0.mlp.fc1"));
        Assert.Equal("lora_unet_down_blocks_0_resnets_0_time_emb_proj", LoraKeyNames.ToKohya("unet.down_blocks.0.resnets.0.time_emb_proj"));
        Assert.Equal("unet.up_blocks.1.upsamplers.0.conv", LoraKeyNames.FromKohya("lora_unet_up_blocks_1_upsamplers_0_conv"));
        Assert.Equal("text_encoder.text_model.encoder.layers.11.self_attn.out_proj", LoraKeyNames.FromKohya("lora_te1_text_model_encoder_layers_11_self_attn_out_proj"));
    }

    private IReadOnlyList<LoraTarget> Select(LoraNetworkOptions options) => LoraTargetRules.Select(new AdaptableModels(_unet, _textEncoder), options);

    /// <summary>Module paths (weight keys without <c>.weight</c>) of the Linear and Conv2d weights (2-D or 4-D) in a key list that match <paramref name="pattern"/>.</summary>
    private static List<string> LayerPaths(string file, string pattern) =>
        Shapes(file).Where(e => e.Value.Length is 2 or 4 && Regex.IsMatch(e.Key, pattern)).Select(e => e.Key).ToList();

    private static Dictionary<string, long[]> Shapes(string file)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FixturePaths.Sd15Keys, file)));
        return document.RootElement.GetProperty("state_dict").EnumerateObject()
            .Where(e => e.Name.EndsWith(".weight", StringComparison.Ordinal))
            .ToDictionary(e => e.Name[..^".weight".Length], e => e.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
    }
}
