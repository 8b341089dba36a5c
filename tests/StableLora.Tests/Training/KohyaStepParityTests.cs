using StableLora.IO;
using StableLora.Lora;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.TextEncoder;
using StableLora.Tests.Unet;
using StableLora.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// One training step of a kohya network (every Transformer2DModel layer, LoCon at conv rank 2 / alpha 1, the text
/// encoder; rank 4, alpha 2) against sd-scripts' own <c>networks/lora.py</c> on PyTorch (Fixtures/lora-anywhere,
/// <c>kohya_step.json</c> says exactly what ran): the loss, every LoRA gradient (the text encoder's included) and the
/// weights after one AdamW step with kohya's two parameter groups (text encoder 5e-5, UNet 1e-3).
/// </summary>
public sealed class KohyaStepParityTests
{
    private static string FixtureFile => Path.Combine(FixturePaths.Root, "lora-anywhere", "kohya_step.safetensors");

    [Fact]
    public void LossGradientsAndOneAdamWStepWithTwoGroupsEqualSdScripts()
    {
        using var scope = NewDisposeScope();
        using var fixture = SafetensorsReader.Open(FixtureFile);
        using var unet = UnetParityTests.LoadFixtureUnet();
        using var textEncoder = TextEncoderParityTests.LoadFixtureTextEncoder();
        foreach (var parameter in unet.parameters().Concat(textEncoder.parameters()))
            parameter.requires_grad = false;

        // The training path's own network: the kohya preset with LoCon and text encoder, as LoraTrainingOptions builds it.
        using var generator = new Generator(1);
        var options = new LoraTrainingOptions { Preset = LoraPreset.Kohya, Rank = 4, Alpha = 2, ConvRank = 2, ConvAlpha = 1, TrainTextEncoder = true };
        using var network = LoraNetwork.Create(new AdaptableModels(unet, textEncoder), options.NetworkOptions(), generator);
        var parameters = network.NamedParameters().Select(p => (Kohya: TestLora.KohyaName(p.Name), p.Name, p.Parameter)).ToList();
        var expectedNames = fixture.Tensors.Select(t => t.Name).Where(n => n.StartsWith("grad/", StringComparison.Ordinal)).Select(n => n["grad/".Length..]).ToList();
        Assert.Equal(expectedNames.Order(StringComparer.Ordinal), parameters.Select(p => p.Kohya).Order(StringComparer.Ordinal));
        Assert.All(network.LoraAdapters(), a => Assert.Equal(
            fixture.Read($"init/{LoraKeyNames.ToKohya(a.Key)}.alpha").item<float>(), (float)a.Adapter.Alpha));
        using (no_grad())
        {
            foreach (var (kohya, _, parameter) in parameters)
                parameter.copy_(fixture.Read($"init/{kohya}"));
        }

        network.Attach();
        unet.train();
        var conditioning = textEncoder.Forward(fixture.Read("input/input_ids")).LastHiddenState;
        TensorAssert.Close(fixture.Read("output/encoder_hidden_states"), conditioning, FixtureCases.Tolerance("text_encoder"), "text encoder with LoRA");
        var prediction = unet.Forward(fixture.Read("input/noisy_latents"), fixture.Read("input/timesteps"), conditioning.repeat(2, 1, 1));
        TensorAssert.Close(fixture.Read("output/model_pred"), prediction, FixtureCases.Tolerance("unet"), "model_pred");
        var loss = nn.functional.mse_loss(prediction, fixture.Read("input/noise"));
        TensorAssert.Close(fixture.Read("output/loss").reshape(1), loss.reshape(1), FixtureCases.Tolerance("training_step", "loss"), "loss");
        loss.backward();
        foreach (var (kohya, _, parameter) in parameters)
            TensorAssert.CloseToScale(fixture.Read($"grad/{kohya}"), parameter.grad!, 1e-5, $"grad {kohya}");

        // AdamW fed sd-scripts' gradients, with the two groups the run makes (LoraTrainingOptions' per-kind learning rates).
        var groups = new[] { ModuleKeys.Unet, ModuleKeys.TextEncoder }
            .Select(component => (IReadOnlyList<(string, Parameter)>)parameters.Where(p => p.Name.StartsWith(component + ".", StringComparison.Ordinal)).Select(p => (p.Name, p.Parameter)).ToList())
            .ToList();
        using var optimizer = new AdamWOptimizer(groups, new AdamWSettings());
        Assert.True(optimizer.IsFlat);
        foreach (var (kohya, _, parameter) in parameters)
            parameter.grad = fixture.Read($"grad/{kohya}");
        optimizer.Step(new[] { 1e-3, 5e-5 });
        foreach (var (kohya, _, parameter) in parameters)
            TensorAssert.Close(fixture.Read($"after/{kohya}"), parameter, FixtureCases.Tolerance("training_step", "params_after_adamw"), $"after {kohya}");
    }
}
