using StableLora.IO;
using StableLora.Layers;
using StableLora.Tests.Infrastructure;
using StableLora.Unet;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Tests.Unet;

public sealed class UnetParityTests
{
    private const string File = "unet.safetensors";

    internal static UNet2DConditionModel LoadFixtureUnet()
    {
        var config = UNet2DConditionConfig.FromFile(Path.Combine(FixturePaths.TinyPipeline, "unet", "config.json"));
        var unet = new UNet2DConditionModel(config, TensorSpec.CpuFloat32);
        using var reader = SafetensorsReader.Open(Path.Combine(FixturePaths.TinyPipeline, "unet", "diffusion_pytorch_model.safetensors"));
        StateDictLoader.Load(unet, reader);
        unet.eval();
        return unet;
    }

    [Theory]
    [InlineData("timesteps_int", "out_int")]
    [InlineData("timesteps_float", "out_float")]
    [InlineData("timestep_scalar", "out_scalar")]
    public void OutputMatchesDiffusers(string timestepName, string outputName)
    {
        using var scope = NewDisposeScope();
        using var unet = LoadFixtureUnet();
        using var noGrad = no_grad();
        var output = unet.Forward(ExpectedTensors.Read(File, "sample"), ExpectedTensors.Read(File, timestepName),
            ExpectedTensors.Read(File, "encoder_hidden_states"));
        TensorAssert.Close(ExpectedTensors.Read(File, outputName), output, FixtureCases.Tolerance("unet"), outputName);
    }
}
