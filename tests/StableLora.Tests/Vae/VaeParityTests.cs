using StableLora.IO;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.Vae;
using static TorchSharp.torch;

namespace StableLora.Tests.Vae;

public sealed class VaeParityTests
{
    private const string File = "vae.safetensors";

    internal static AutoencoderKL LoadFixtureVae() =>
        ComponentLoader.LoadVae(Path.Combine(FixturePaths.TinyPipeline, "vae"), FixtureLoadSettings.CpuFloat32);

    [Fact]
    public void EncodeMatchesDiffusers()
    {
        using var scope = NewDisposeScope();
        using var vae = LoadFixtureVae();
        using var noGrad = no_grad();
        var image = ExpectedTensors.Read(File, "image");
        var tolerance = FixtureCases.Tolerance("vae_encode");
        TensorAssert.Close(ExpectedTensors.Read(File, "encoder_output"), vae.EncoderOutput(image), tolerance, "encoder_output");
        var distribution = vae.Encode(image);
        TensorAssert.Close(ExpectedTensors.Read(File, "moments"), distribution.Moments, tolerance, "moments");
        TensorAssert.Close(ExpectedTensors.Read(File, "latent_mean"), distribution.Mean, tolerance, "latent_mean");
        TensorAssert.Close(ExpectedTensors.Read(File, "latent_logvar"), distribution.LogVar, tolerance, "latent_logvar");
        TensorAssert.Close(ExpectedTensors.Read(File, "latent_std"), distribution.Std, tolerance, "latent_std");
    }

    [Fact]
    public void DecodeMatchesDiffusers()
    {
        using var scope = NewDisposeScope();
        using var vae = LoadFixtureVae();
        using var noGrad = no_grad();
        var decoded = vae.Decode(ExpectedTensors.Read(File, "decode_latents"));
        TensorAssert.Close(ExpectedTensors.Read(File, "decode_sample"), decoded, FixtureCases.Tolerance("vae_decode"), "decode_sample");
    }
}
