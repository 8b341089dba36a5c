using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.Unet;
using StableLora.Unet;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// Gradient checkpointing must change memory, not results: the same loss and LoRA gradients as the plain backward
/// (and as diffusers), and a gradient for every LoRA weight even though no tensor entering a checkpointed block
/// requires one (the frozen-input case that silently cuts LoRA out of a reentrant checkpoint).
/// </summary>
public sealed class GradientCheckpointingTests
{
    private const string File = "training.safetensors";

    [Fact]
    public void CheckpointedGradientsEqualPlainOnesAndDiffusers()
    {
        using var scope = NewDisposeScope();
        var plain = Gradients(checkpointing: false, out var plainLoss, out var plainPrediction);
        var checkpointed = Gradients(checkpointing: true, out var checkpointedLoss, out var checkpointedPrediction);

        // The recomputed forward is the same arithmetic: the prediction and loss are bit-identical.
        TensorAssert.Identical(plainPrediction, checkpointedPrediction, "prediction");
        Assert.Equal(plainLoss, checkpointedLoss);
        Assert.Equal(plain.Keys.Order(), checkpointed.Keys.Order());
        foreach (var (name, gradient) in plain)
        {
            // Only the order in which a block's incoming gradient contributions are summed may differ: fp32 rounding.
            TensorAssert.Close(gradient, checkpointed[name], new Tolerance(1e-7, 1e-5), $"grad {name}");
            TensorAssert.Close(ExpectedTensors.Read(File, $"grad.{name}"), checkpointed[name], FixtureCases.Tolerance("training_step", "grads"), $"diffusers grad {name}");
        }
    }

    [Fact]
    public void EveryLoraWeightOfAFreshAdapterGetsAGradientThroughFrozenInputs()
    {
        using var scope = NewDisposeScope();
        using var unet = FrozenFixtureUnet();
        using var generator = new Generator(5, CPU);
        using var network = TestLora.Seed(unet, 4, generator);
        network.Attach();
        unet.train();
        unet.GradientCheckpointing = true;

        var noisy = ExpectedTensors.Read(File, "noisy_latents");
        Assert.False(noisy.requires_grad);
        var loss = nn.functional.mse_loss(unet.Forward(noisy, ExpectedTensors.Read(File, "timesteps"), ExpectedTensors.Read(File, "encoder_hidden_states")),
            ExpectedTensors.Read(File, "target"));
        loss.backward();

        var ups = network.NamedParameters().Where(p => p.Name.EndsWith(".lora_up.weight", StringComparison.Ordinal)).ToList();
        Assert.Equal(network.Modules.Count, ups.Count);
        foreach (var (name, parameter) in ups)
        {
            Assert.NotNull(parameter.grad);
            Assert.True(parameter.grad!.abs().max().item<float>() > 0, $"{name} got a zero gradient");
        }

        Assert.All(unet.parameters(), p => Assert.Null(p.grad));
    }

    [Fact]
    public void CheckpointingIsInertWithoutGradientsOrInEvalMode()
    {
        using var scope = NewDisposeScope();
        using var unet = FrozenFixtureUnet();
        var inputs = (ExpectedTensors.Read(File, "noisy_latents"), ExpectedTensors.Read(File, "timesteps"), ExpectedTensors.Read(File, "encoder_hidden_states"));
        Tensor expected;
        using (no_grad())
            expected = unet.Forward(inputs.Item1, inputs.Item2, inputs.Item3);
        unet.GradientCheckpointing = true;
        unet.train();
        using (no_grad())
            TensorAssert.Identical(expected, unet.Forward(inputs.Item1, inputs.Item2, inputs.Item3), "no_grad forward");
        unet.eval();
        TensorAssert.Identical(expected, unet.Forward(inputs.Item1, inputs.Item2, inputs.Item3), "eval forward");
    }

    private static UNet2DConditionModel FrozenFixtureUnet()
    {
        var unet = UnetParityTests.LoadFixtureUnet();
        foreach (var parameter in unet.parameters())
            parameter.requires_grad = false;
        return unet;
    }

    private static Dictionary<string, Tensor> Gradients(bool checkpointing, out float loss, out Tensor prediction)
    {
        using var unet = FrozenFixtureUnet();
        using var network = TestLora.FromFile(Path.Combine(FixturePaths.TinySd, "lora_weights.pt"), unet);
        network.Attach();
        unet.train();
        unet.GradientCheckpointing = checkpointing;
        prediction = unet.Forward(ExpectedTensors.Read(File, "noisy_latents"), ExpectedTensors.Read(File, "timesteps"), ExpectedTensors.Read(File, "encoder_hidden_states"));
        var value = nn.functional.mse_loss(prediction.to(float32), ExpectedTensors.Read(File, "target").to(float32));
        value.backward();
        loss = value.item<float>();
        prediction = prediction.detach();
        return network.NamedParameters().ToDictionary(p => TestLora.SeedName(p.Name), p => p.Parameter.grad!.clone());
    }
}
