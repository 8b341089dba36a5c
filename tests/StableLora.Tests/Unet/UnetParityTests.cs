using StableLora.IO;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.Unet;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Tests.Unet;

public sealed class UnetParityTests
{
    private const string File = "unet.safetensors";

    internal static UNet2DConditionModel LoadFixtureUnet() =>
        ComponentLoader.LoadUnet(Path.Combine(FixturePaths.TinyPipeline, "unet"), FixtureLoadSettings.CpuFloat32);

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
