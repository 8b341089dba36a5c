using System.Text.Json;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.Unet;
using static TorchSharp.torch;

namespace StableLora.Tests.Lora;

public sealed class LoraParityTests
{
    private const string UnetFile = "unet.safetensors";

    /// <summary>The unet_lora tolerance is the parity bound against diffusers for every file that holds this LoRA.</summary>
    [Theory]
    [InlineData("lora_weights.pt", "unet_lora.safetensors")]
    [InlineData("lora_weights.safetensors", "unet_lora.safetensors")]
    [InlineData("lora_kohya.safetensors", "kohya.safetensors")]
    public void FixtureLoraGivesDiffusersUnetOutputAtScaleOneAndHalf(string loraFile, string expectedFile)
    {
        using var scope = NewDisposeScope();
        using var unet = UnetParityTests.LoadFixtureUnet();
        using var network = TestLora.FromFile(Path.Combine(FixturePaths.TinySd, loraFile), unet);
        network.Attach();
        using var noGrad = no_grad();
        var sample = ExpectedTensors.Read(UnetFile, "sample");
        var timesteps = ExpectedTensors.Read(UnetFile, "timesteps_int");
        var context = ExpectedTensors.Read(UnetFile, "encoder_hidden_states");
        var tolerance = FixtureCases.Tolerance("unet_lora");
        TensorAssert.Close(ExpectedTensors.Read(expectedFile, "out_scale_1"), unet.Forward(sample, timesteps, context), tolerance, "scale 1");
        network.SetMultipliers(0.5, 0.5);
        TensorAssert.Close(ExpectedTensors.Read(expectedFile, "out_scale_0_5"), unet.Forward(sample, timesteps, context), tolerance, "scale 0.5");

        network.Detach();
        TensorAssert.Close(ExpectedTensors.Read(UnetFile, "out_int"), unet.Forward(sample, timesteps, context), FixtureCases.Tolerance("unet"), "detached");
    }

    /// <summary>The kohya_lora case's own bound (abs 1e-6): the kohya file must give the seed file's output.</summary>
    [Fact]
    public void KohyaFileGivesTheSameOutputAsTheSeedFile()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var sample = ExpectedTensors.Read(UnetFile, "sample");
        var timesteps = ExpectedTensors.Read(UnetFile, "timesteps_int");
        var context = ExpectedTensors.Read(UnetFile, "encoder_hidden_states");
        Tensor Output(string file, double scale)
        {
            using var unet = UnetParityTests.LoadFixtureUnet();
            using var network = TestLora.FromFile(Path.Combine(FixturePaths.TinySd, file), unet);
            network.SetMultipliers(scale, scale);
            network.Attach();
            return unet.Forward(sample, timesteps, context);
        }

        foreach (double scale in new[] { 1.0, 0.5 })
            TensorAssert.Close(Output("lora_weights.pt", scale), Output("lora_kohya.safetensors", scale), FixtureCases.Tolerance("kohya_lora"), $"scale {scale}");
    }

    [Fact]
    public void SeedRecipeOnTheFixtureUnetHasTheFixtureKeysShapesAndOrderAndStartsAsANoOp()
    {
        using var scope = NewDisposeScope();
        using var unet = UnetParityTests.LoadFixtureUnet();
        using var generator = new Generator(300);
        using var network = TestLora.Seed(unet, 4, generator);
        var lora = FixtureCases.Case("unet_lora");
        var expectedKeys = lora.GetProperty("lora_state_dict_keys").EnumerateArray().Select(k => k.GetString()!).ToList();
        var stateDict = TestLora.SeedStateDict(network);
        Assert.Equal(expectedKeys, stateDict.Select(e => e.Key));
        var shapes = lora.GetProperty("lora_state_dict_shapes");
        foreach (var (key, tensor) in stateDict)
            Assert.Equal(shapes.GetProperty(key).EnumerateArray().Select(d => d.GetInt64()), tensor.shape);
        Assert.All(network.LoraAdapters(), l => Assert.Equal(0, l.Adapter.Up.abs().sum().item<float>()));
        Assert.All(network.NamedParameters(), p => Assert.True(p.Parameter.requires_grad));

        network.Attach();
        using var noGrad = no_grad();
        var output = unet.Forward(ExpectedTensors.Read(UnetFile, "sample"), ExpectedTensors.Read(UnetFile, "timesteps_int"), ExpectedTensors.Read(UnetFile, "encoder_hidden_states"));
        TensorAssert.Close(ExpectedTensors.Read(UnetFile, "out_int"), output, FixtureCases.Tolerance("unet"), "zero-initialised LoRA");
    }

    [Fact]
    public void DownWeightsAreDrawnFromNormalWithStdOneOverRank()
    {
        using var scope = NewDisposeScope();
        using var unet = UnetParityTests.LoadFixtureUnet();
        using var generator = new Generator(1);
        using var network = TestLora.Seed(unet, 8, generator);
        var downs = cat(network.LoraAdapters().Select(l => l.Adapter.Down.flatten()).ToList(), 0);
        Assert.InRange(downs.std().item<float>(), 0.125 * 0.95, 0.125 * 1.05);
        Assert.InRange(downs.mean().item<float>(), -0.01, 0.01);
    }
}
