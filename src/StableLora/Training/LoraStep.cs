using StableLora.Schedulers;
using StableLora.Unet;
using StableLora.Vae;
using TorchSharp.Modules;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>The loss and update settings of a step.</summary>
/// <param name="NoiseOffset">kohya's noise offset (0: off).</param>
/// <param name="MinSnrGamma">min-SNR-gamma weighting, or null.</param>
/// <param name="MaxGradNorm">Gradient clipping norm (0: off).</param>
/// <param name="IpNoiseGamma">sd-scripts' input perturbation noise strength, or null.</param>
/// <param name="Loss">The loss type and sd-scripts' loss weightings; null: the plain MSE.</param>
internal sealed record LoraStepSettings(double NoiseOffset, double? MinSnrGamma, double MaxGradNorm, double? IpNoiseGamma = null, LossSettings? Loss = null);

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
/// distribution, DDPM noising at random timesteps, the UNet prediction, the float32 loss (MSE by default, optionally
/// min-SNR-weighted, or sd-scripts' loss settings), backward; then unscaling (fp16), clipping and the optimizer (AdamW by default) on the LoRA
/// parameters.
/// </summary>
/// <remarks>
/// <c>snrScheduler</c> is the schedule the SNR loss weights come from when it differs from <c>scheduler</c>: sd-scripts
/// computes them before <c>zero_terminal_snr</c> rescales the betas (see <see cref="LossFunctions.Compute"/>); null: <c>scheduler</c>.
/// </remarks>
internal sealed class LoraStep(UNet2DConditionModel unet, AutoencoderKL vae, DdpmScheduler scheduler, PredictionKind prediction,
    LoraStepSettings settings, IReadOnlyList<Parameter> parameters, ILoraOptimizer optimizer, LossScaler? scaler, DdpmScheduler? snrScheduler = null)
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
    /// order: the latent sample's ε, the noise (and the noise offset), the timesteps, and (with
    /// <see cref="LoraStepSettings.IpNoiseGamma"/>) the input perturbation noise, so that settings without a draw leave
    /// every other draw where it was. Returns the unscaled loss; a non-finite loss is not back-propagated.
    /// </summary>
    /// <param name="moments">The batch's latent distribution.</param>
    /// <param name="conditioning">The text encoder's hidden states.</param>
    /// <param name="generator">The source of every draw.</param>
    /// <param name="backwardScale">What the loss is multiplied by before backward (loss scale / accumulation).</param>
    /// <param name="masks">[B, 1, H, W] pixel weights (masked loss), or null.</param>
    /// <param name="lossWeights">[B] per-image loss weights (regularisation images), or null.</param>
    public double ForwardBackward(DiagonalGaussianDistribution moments, Tensor conditioning, Generator generator, double backwardScale,
        Tensor? masks = null, Tensor? lossWeights = null)
    {
        using var scope = NewDisposeScope();
        var eps = randn(moments.Mean.shape, float32, CPU, generator: generator).to(unet.Spec.Device);
        var latents = moments.Sample(eps.to(moments.Mean.dtype)).to(float32).Times(vae.Config.ScalingFactor);
        return ForwardBackwardLatents(latents, conditioning, generator, backwardScale, masks, lossWeights);
    }

    /// <summary>The step from scaled latents on (precomputed latents): noise, timesteps, prediction, loss, backward.</summary>
    public double ForwardBackwardLatents(Tensor latents, Tensor conditioning, Generator generator, double backwardScale, Tensor? masks = null, Tensor? lossWeights = null)
    {
        using var scope = NewDisposeScope();
        var device = unet.Spec.Device;
        var noise = randn(latents.shape, float32, CPU, generator: generator);
        if (settings.NoiseOffset > 0)
            noise = noise.Plus(randn(new[] { latents.shape[0], latents.shape[1], 1L, 1L }, float32, CPU, generator: generator).Times(settings.NoiseOffset));
        noise = noise.to(device);
        var timesteps = randint(0, scheduler.TrainTimesteps, new[] { latents.shape[0] }, int64, CPU, generator: generator).to(device);
        var perturbation = settings.IpNoiseGamma is null ? null : randn(latents.shape, float32, CPU, generator: generator).to(device);
        var noisy = NoisyLatents(scheduler, latents, noise, timesteps, perturbation, settings.IpNoiseGamma);
        var target = prediction == PredictionKind.Velocity ? scheduler.GetVelocity(latents, noise, timesteps) : noise;

        var predicted = unet.Forward(noisy.to(unet.Spec.DType), timesteps, conditioning.to(unet.Spec.DType));
        var lossSettings = settings.Loss ?? LossSettings.Default;
        var loss = lossSettings.IsPlainMse && snrScheduler is null && masks is null && lossWeights is null
            ? LossFunctions.Mse(predicted.to(float32), target.to(float32), timesteps, scheduler, prediction, settings.MinSnrGamma)
            : LossFunctions.Compute(predicted.to(float32), target.to(float32), timesteps, scheduler, (snrScheduler ?? scheduler).AlphasCumprod, prediction,
                settings.MinSnrGamma, lossSettings, masks?.to(device), lossWeights?.to(device));
        // Backward is queued before the loss is read: reading it first would stall the host until the device finished
        // the forward pass, with nothing queued behind it. A non-finite loss gives non-finite gradients, which the
        // caller discards.
        (backwardScale == 1.0 ? loss : loss.Times(backwardScale)).backward();
        return loss.item<float>();
    }

    /// <summary>
    /// DDPM's <c>add_noise</c>; with input perturbation (sd-scripts' <c>ip_noise_gamma</c>) the latents are noised with
    /// noise + gamma x <paramref name="perturbation"/> while the target stays the plain noise.
    /// </summary>
    internal static Tensor NoisyLatents(DdpmScheduler scheduler, Tensor latents, Tensor noise, Tensor timesteps, Tensor? perturbation, double? ipNoiseGamma)
    {
        if (ipNoiseGamma is not { } gamma || perturbation is null)
            return scheduler.AddNoise(latents, noise, timesteps);
        using var scope = NewDisposeScope();
        // noise_scheduler.add_noise(latents, noise + strength * torch.randn_like(latents), timesteps)
        return scheduler.AddNoise(latents, noise.Plus(perturbation.Times(gamma)), timesteps).MoveToOuterDisposeScope();
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
