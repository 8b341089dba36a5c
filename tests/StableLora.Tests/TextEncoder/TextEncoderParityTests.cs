using StableLora.IO;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using static TorchSharp.torch;

namespace StableLora.Tests.TextEncoder;

public sealed class TextEncoderParityTests
{
    private const string File = "text_encoder.safetensors";

    internal static ClipTextModel LoadFixtureTextEncoder() =>
        ComponentLoader.LoadTextEncoder(Path.Combine(FixturePaths.TinyPipeline, "text_encoder"), FixtureLoadSettings.CpuFloat32);

    [Fact]
    public void HiddenStatesMatchTransformers()
    {
        using var scope = NewDisposeScope();
        using var model = LoadFixtureTextEncoder();
        using var noGrad = no_grad();
        var output = model.Forward(ExpectedTensors.Read(File, "input_ids"), outputHiddenStates: true);
        var tolerance = FixtureCases.Tolerance("text_encoder");
        TensorAssert.Close(ExpectedTensors.Read(File, "last_hidden_state"), output.LastHiddenState, tolerance, "last_hidden_state");
        TensorAssert.Close(ExpectedTensors.Read(File, "pooler_output"), output.PooledOutput, tolerance, "pooler_output");
        Assert.Equal(4, output.HiddenStates!.Count);
        for (int i = 0; i < 4; i++)
            TensorAssert.Close(ExpectedTensors.Read(File, $"hidden_states_{i}"), output.HiddenStates[i], tolerance, $"hidden_states_{i}");
    }
}
