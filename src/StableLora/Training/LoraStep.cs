using StableLora.Schedulers;
using StableLora.Unet;
using StableLora.Vae;
using TorchSharp.Modules;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>The loss and update settings of a step.</summary>
internal sealed record LoraStepSettings(double NoiseOffset, double? MinSnrGamma, double MaxGradNorm);

/// <summary>What an update did.</summary>
internal enum UpdateOutcome
{
    Applied,

    /// <summary>fp16 gradients overflowed at the current loss scale (the scale was halved).</summary>
    SkippedOverflow,

    /// <summary>A gradient is not finite without loss scaling: nothing was changed.</summary>
    SkippedNonFiniteGradients,
}

/// <summary>
/// The arithmetic of one training step, shared by the training loop and the benchmarks: latents from the VAE's
/// distribution, DDPM noising at random timesteps, the UNet prediction, the float32 MSE (optionally min-SNR-weighted),
/// backward; then unscaling (fp16), clipping and AdamW on the LoRA parameters.
/// </summary>
internal sealed class LoraStep(UNet2DConditionModel unet, AutoencoderKL vae, DdpmScheduler scheduler, PredictionKind prediction,
    LoraStepSettings settings, IReadOnlyList<Parameter> parameters, AdamWOptimizer optimizer, LossScaler? scaler)
{
    public IReadOnlyList<Parameter> Parameters => parameters;

    /// <summary>The latent distribution of pixels in [-1, 1] (no gradient).</summary>
    public DiagonalGaussianDistribution Encode(Tensor pixels)
    {
        using var noGrad = no_grad();
        return vae.Encode(pixels.to(vae.Spec.Device).to(vae.Spec.DType));
    }

    /// <summary>
    /// One micro-batch forward and backward. Every draw comes from <paramref name="generator"/> on the CPU, in this
    /// order: the latent sample's ε, the noise (and the noise offset), the timesteps. Returns the unscaled loss; a
    /// non-finite loss is not back-propagated.
    /// </summary>
    public double ForwardBackward(DiagonalGaussianDistribution moments, Tensor conditioning, Generator generator, double backwardScale)
    {
        using var scope = NewDisposeScope();
        var eps = randn(moments.Mean.shape, float32, CPU, generator: generator).to(unet.Spec.Device);
        var latents = moments.Sample(eps.to(moments.Mean.dtype)).to(float32).Times(vae.Config.ScalingFactor);
        return ForwardBackwardLatents(latents, conditioning, generator, backwardScale);
    }

    /// <summary>The step from scaled latents on (precomputed latents): noise, timesteps, prediction, loss, backward.</summary>
    public double ForwardBackwardLatents(Tensor latents, Tensor conditioning, Generator generator, double backwardScale)
    {
        using var scope = NewDisposeScope();
        var device = unet.Spec.Device;
        var noise = randn(latents.shape, float32, CPU, generator: generator);
        if (settings.NoiseOffset > 0)
            noise = noise.Plus(randn(new[] { latents.shape[0], latents.shape[1], 1L, 1L }, float32, CPU, generator: generator).Times(settings.NoiseOffset));
        noise = noise.to(device);
        var timesteps = randint(0, scheduler.TrainTimesteps, new[] { latents.shape[0] }, int64, CPU, generator: generator).to(device);
        var noisy = scheduler.AddNoise(latents, noise, timesteps);
        var target = prediction == PredictionKind.Velocity ? scheduler.GetVelocity(latents, noise, timesteps) : noise;

        var predicted = unet.Forward(noisy.to(unet.Spec.DType), timesteps, conditioning.to(unet.Spec.DType));
        var loss = LossFunctions.Mse(predicted.to(float32), target.to(float32), timesteps, scheduler, prediction, settings.MinSnrGamma);
        // Backward is queued before the loss is read: reading it first would stall the host until the device finished
        // the forward pass, with nothing queued behind it. A non-finite loss gives non-finite gradients, which the
        // caller discards.
        (backwardScale == 1.0 ? loss : loss.Times(backwardScale)).backward();
        return loss.item<float>();
    }

    /// <summary>
    /// Unscales and checks (fp16) or checks (fp32, bf16) that every gradient is finite, clips, and applies AdamW at
    /// <paramref name="learningRate"/>; a step with a non-finite gradient changes no weight and no optimizer state.
    /// Gradients are cleared either way. One host synchronisation without loss scaling.
    /// </summary>
    public UpdateOutcome Update(double learningRate) => Update(Enumerable.Repeat(learningRate, optimizer.GroupCount).ToList());

    /// <summary>As <see cref="Update(double)"/>, with one learning rate per optimizer group.</summary>
    public UpdateOutcome Update(IReadOnlyList<double> learningRates)
    {
        try
        {
            using var scope = NewDisposeScope();
            var gradients = optimizer.Gradients();
            if (scaler is not null)
            {
                bool finite = scaler.UnscaleAndCheck(gradients);
                scaler.Update(foundInfOrNaN: !finite);
                if (!finite)
                    return UpdateOutcome.SkippedOverflow;
                if (settings.MaxGradNorm > 0)
                    GradientClipping.ClipByTotalNorm(gradients, settings.MaxGradNorm);
            }
            else
            {
                var finite = GradientChecks.AllFinite(gradients);
                // Clipping before the check is read keeps one synchronisation; a non-finite step discards the clipped values.
                if (settings.MaxGradNorm > 0)
                    GradientClipping.ClipByTotalNorm(gradients, settings.MaxGradNorm);
                if (!finite.item<bool>())
                    return UpdateOutcome.SkippedNonFiniteGradients;
            }

            optimizer.Step(learningRates, gradients);
            return UpdateOutcome.Applied;
        }
        finally
        {
            optimizer.ZeroGrad();
        }
    }

    /// <summary>Drops the gradients without an update (a skipped step).</summary>
    public void Discard() => optimizer.ZeroGrad();
}
