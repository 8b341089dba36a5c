using StableLora.IO;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.TextEncoder;
using StableLora.Tests.Unet;
using StableLora.Tests.Vae;
using StableLora.Training;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// The seed's training step against the fixture's training_step case (diffusers' train_text_to_image_lora.py on the
/// tiny pipeline): latents, noising, conditioning, prediction, loss, every LoRA gradient, and three AdamW steps,
/// through the same components the training loop uses.
/// </summary>
public sealed class TrainingStepParityTests
{
    private const string File = "training.safetensors";

    [Fact]
    public void LatentsNoisingAndConditioningMatchDiffusers()
    {
        using var scope = NewDisposeScope();
        using var vae = VaeParityTests.LoadFixtureVae();
        using var textEncoder = TextEncoderParityTests.LoadFixtureTextEncoder();
        using var noGrad = no_grad();
        var distribution = vae.Encode(ExpectedTensors.Read(File, "pixel_values"));
        var latents = distribution.Sample(ExpectedTensors.Read(File, "latent_sample_eps")) * vae.Config.ScalingFactor;
        TensorAssert.Close(ExpectedTensors.Read(File, "latents"), latents, FixtureCases.Tolerance("vae_encode"), "latents");
        TensorAssert.Close(ExpectedTensors.Read(File, "latents_mean_variant"), distribution.Mean * vae.Config.ScalingFactor, FixtureCases.Tolerance("vae_encode"), "mean latents");

        using var scheduler = new DdpmScheduler(SchedulerConfig.FromFile(Path.Combine(FixturePaths.TinyPipeline, "scheduler", "scheduler_config.json")));
        var noisy = scheduler.AddNoise(ExpectedTensors.Read(File, "latents"), ExpectedTensors.Read(File, "noise"), ExpectedTensors.Read(File, "timesteps"));
        TensorAssert.Close(ExpectedTensors.Read(File, "noisy_latents"), noisy, FixtureCases.Tolerance("ddpm"), "noisy_latents");
        TensorAssert.Close(ExpectedTensors.Read(File, "target"), ExpectedTensors.Read(File, "noise"), new Tolerance(0, 0), "epsilon target is the noise");

        var conditioning = textEncoder.Forward(ExpectedTensors.Read(File, "input_ids")).LastHiddenState;
        TensorAssert.Close(ExpectedTensors.Read(File, "encoder_hidden_states"), conditioning.expand(2, -1, -1), FixtureCases.Tolerance("text_encoder"), "encoder_hidden_states");
    }

    [Fact]
    public void LossGradientsAndThreeAdamWStepsMatchDiffusers()
    {
        using var scope = NewDisposeScope();
        using var unet = UnetParityTests.LoadFixtureUnet();
        foreach (var parameter in unet.parameters())
            parameter.requires_grad = false;
        using var network = TestLora.FromFile(Path.Combine(FixturePaths.TinySd, "lora_weights.pt"), unet);
        network.Attach();
        unet.train();
        var parameters = network.NamedParameters().Select(p => (Name: TestLora.SeedName(p.Name), p.Parameter)).ToList();
        using var optimizer = new AdamWOptimizer(parameters, new AdamWSettings());

        var noisy = ExpectedTensors.Read(File, "noisy_latents");
        var timesteps = ExpectedTensors.Read(File, "timesteps");
        var conditioning = ExpectedTensors.Read(File, "encoder_hidden_states");
        var target = ExpectedTensors.Read(File, "target");
        var losses = ExpectedTensors.Read(File, "adamw_losses");
        var lossTolerance = FixtureCases.Tolerance("training_step", "loss");
        // The fixture's own bound for parameters after AdamW fed by the port's own backward: elements whose gradient is
        // near eps = 1e-8 can move by up to lr = 1e-4 (see the training_step case note).
        var endToEnd = new Tolerance(1e-4, FixtureCases.Tolerance("training_step", "params_after_adamw").Rel);

        for (int step = 1; step <= 3; step++)
        {
            var predicted = unet.Forward(noisy, timesteps, conditioning);
            var loss = nn.functional.mse_loss(predicted.to(float32), target.to(float32));
            TensorAssert.Close(losses[step - 1].reshape(1), loss.reshape(1), lossTolerance, $"loss before step {step}");
            loss.backward();
            if (step == 1)
            {
                TensorAssert.Close(ExpectedTensors.Read(File, "model_pred"), predicted, FixtureCases.Tolerance("unet"), "model_pred");
                TensorAssert.Close(ExpectedTensors.Read(File, "loss"), loss.reshape(1), lossTolerance, "loss");
                foreach (var (name, parameter) in parameters)
                    TensorAssert.Close(ExpectedTensors.Read(File, $"grad.{name}"), parameter.grad!, FixtureCases.Tolerance("training_step", "grads"), $"grad {name}");
            }

            optimizer.Step(1e-4);
            optimizer.ZeroGrad();
            if (step is 1 or 3)
            {
                foreach (var (name, parameter) in parameters)
                    TensorAssert.Close(ExpectedTensors.Read(File, $"adamw_step{step}.{name}"), parameter, endToEnd, $"step {step} {name}");
            }
        }
    }
}
