using System.Text.Json;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Tests.Pipeline;

/// <summary>
/// The models built from the SD 1.5 configs have exactly the state-dict keys, shapes and order of the real SD 1.5
/// UNet, VAE and CLIP text encoder (listed by diffusers/transformers in the sd15-keys fixture). Built on the meta
/// device: no weights, no memory.
/// </summary>
public sealed class Sd15ArchitectureTests
{
    private static readonly TensorSpec Meta = new(META, ScalarType.Float32);

    [Fact]
    public void UnetMatchesSd15KeysShapesAndOrder()
    {
        using var unet = new UNet2DConditionModel(Sd15Presets.Unet, Meta);
        AssertMatches("unet.json", unet);
        Assert.Equal(32, unet.AttentionModules().Count);
    }

    [Fact]
    public void VaeMatchesSd15KeysShapesAndOrder()
    {
        using var vae = new AutoencoderKL(Sd15Presets.Vae, Meta);
        AssertMatches("vae.json", vae);
    }

    [Fact]
    public void TextEncoderMatchesSd15KeysShapesAndOrder()
    {
        using var model = new ClipTextModel(Sd15Presets.TextEncoder, Meta);
        AssertMatches("text_encoder.json", model);
    }

    [Fact]
    public void PresetsAreTheFixtureConfigs()
    {
        foreach (var (preset, file) in new[] { ("unet", "unet_config.json"), ("vae", "vae_config.json"), ("text_encoder", "text_encoder_config.json") })
            Assert.Equal(File.ReadAllText(Path.Combine(FixturePaths.Sd15Keys, "configs", file)), Sd15Presets.Json(preset));
    }

    private static void AssertMatches(string file, nn.Module model)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FixturePaths.Sd15Keys, file)));
        var expected = document.RootElement.GetProperty("state_dict").EnumerateObject()
            .Select(p => $"{p.Name} {string.Join("x", p.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()))}")
            .ToList();
        var actual = StateDicts.Ordered(model).Select(p => $"{p.Key} {string.Join("x", p.Value.shape)}").ToList();
        Assert.Equal(expected.Except(actual), Array.Empty<string>());
        Assert.Equal(actual.Except(expected), Array.Empty<string>());
        Assert.Equal(expected, actual);
    }
}
