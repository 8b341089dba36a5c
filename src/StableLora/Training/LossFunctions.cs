using TorchSharp;
using StableLora.Layers;
using StableLora.Schedulers;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>The loss settings of a step beyond min-SNR-gamma (sd-scripts' names in the remarks of each).</summary>
/// <param name="Type">sd-scripts' <c>loss_type</c>.</param>
/// <param name="HuberC">sd-scripts' <c>huber_c</c>.</param>
/// <param name="HuberSchedule">sd-scripts' <c>huber_schedule</c>.</param>
/// <param name="DebiasedEstimation">sd-scripts' <c>debiased_estimation_loss</c>.</param>
/// <param name="VPredLikeLoss">sd-scripts' <c>v_pred_like_loss</c> (null: off).</param>
internal sealed record LossSettings(
    LossType Type = LossType.L2, double HuberC = LossSettings.DefaultHuberC, HuberSchedule HuberSchedule = HuberSchedule.Snr, bool DebiasedEstimation = false, double? VPredLikeLoss = null)
{
    /// <summary>sd-scripts' default <c>huber_c</c>.</summary>
    public const double DefaultHuberC = 0.1;

    /// <summary>sd-scripts' <c>huber_scale</c>, fixed at its default.</summary>
    public const double HuberScale = 1.0;

    public static LossSettings Default { get; } = new();

    /// <summary>The default loss: the mean squared error, nothing added (min-SNR-gamma aside).</summary>
    public bool IsPlainMse => Type == LossType.L2 && !DebiasedEstimation && VPredLikeLoss is null;

    public static LossSettings For(LoraTrainingOptions options) => new(
        options.LossType, options.HuberC ?? DefaultHuberC, options.HuberSchedule ?? HuberSchedule.Snr, options.DebiasedEstimation, options.VPredLikeLoss);

    /// <summary>sd-scripts' name of a loss type (<c>ss_loss_type</c>).</summary>
    public static string Name(LossType type) => type switch
    {
        LossType.L2 => "l2",
        LossType.L1 => "l1",
        LossType.Huber => "huber",
        LossType.SmoothL1 => "smooth_l1",
        _ => type.ToString(),
    };

    /// <summary>sd-scripts' name of a Huber schedule (<c>ss_huber_schedule</c>).</summary>
    public static string Name(HuberSchedule schedule) => schedule switch
    {
        HuberSchedule.Constant => "constant",
        HuberSchedule.Exponential => "exponential",
        HuberSchedule.Snr => "snr",
        _ => schedule.ToString(),
    };
}

/// <summary>
/// The training loss in float32. The default path is <see cref="Mse"/> (optionally min-SNR-gamma weighted, as diffusers'
/// training scripts compute it); <see cref="Compute"/> adds sd-scripts' settings with sd-scripts' arithmetic
/// (train_network.py's <c>process_batch</c> and <c>post_process_loss</c>): the element-wise loss
/// (<c>conditional_loss</c>, with <c>get_huber_threshold_if_needed</c>), the mean over all but the batch dimension, then
/// min-SNR-gamma (<c>apply_snr_weight</c>), the v-prediction-like loss (<c>add_v_prediction_like_loss</c>) and debiased
/// estimation (<c>apply_debiased_estimation</c>) in that order, and the batch mean.
/// </summary>
internal static class LossFunctions
{
    public static Tensor Mse(Tensor predicted, Tensor target, Tensor timesteps, DdpmScheduler scheduler, PredictionKind prediction, double? minSnrGamma)
    {
        if (minSnrGamma is not { } gamma)
            return nn.functional.mse_loss(predicted, target);

        // Hang et al. 2023, as diffusers' training scripts compute it: weight = min(snr, gamma) / snr (or / (snr + 1) for v).
        var alphasCumprod = scheduler.AlphasCumprod.to(timesteps.device);
        var alpha = alphasCumprod.sqrt().index_select(0, timesteps);
        var sigma = alphasCumprod.SubtractedFrom(1).sqrt().index_select(0, timesteps);
        var snr = (alpha / sigma).Pow(2);
        var weights = snr.ClampMax(gamma);
        weights = prediction == PredictionKind.Velocity ? weights / snr.Plus(1) : weights / snr;
        var perSample = nn.functional.mse_loss(predicted, target, nn.Reduction.None).mean(Enumerable.Range(1, (int)predicted.dim() - 1).Select(d => (long)d).ToArray());
        return (perSample * weights).mean();
    }

    /// <summary>
    /// The loss of a batch with every setting.
    /// </summary>
    /// <param name="predicted">The UNet's output (float32).</param>
    /// <param name="target">The noise or velocity (float32).</param>
    /// <param name="timesteps">One timestep per sample.</param>
    /// <param name="scheduler">The noise schedule the batch was noised with (the Huber 'snr' schedule reads its alphas_cumprod).</param>
    /// <param name="snrAlphasCumprod">
    /// The alphas_cumprod the SNR weights (min-SNR, v-prediction-like, debiased) come from. sd-scripts computes its
    /// <c>all_snr</c> before <c>zero_terminal_snr</c> rescales the betas and does not recompute it, so with zero terminal SNR
    /// these are the unrescaled schedule's while the noising and the Huber threshold use the rescaled one.
    /// </param>
    /// <param name="prediction">Epsilon or v-prediction (sd-scripts' <c>v_parameterization</c>).</param>
    /// <param name="minSnrGamma">min-SNR-gamma, or null.</param>
    /// <param name="settings">The loss settings.</param>
    /// <param name="masks">sd-scripts' masked loss: [B, 1, H, W] pixel weights, averaged down to the prediction's size (<c>apply_masked_loss</c>); null: none.</param>
    /// <param name="lossWeights">sd-scripts' <c>loss_weights</c>: [B] per-image weights (prior_loss_weight for regularisation images); null: all 1.</param>
    public static Tensor Compute(Tensor predicted, Tensor target, Tensor timesteps, DdpmScheduler scheduler, Tensor snrAlphasCumprod, PredictionKind prediction,
        double? minSnrGamma, LossSettings settings, Tensor? masks = null, Tensor? lossWeights = null)
    {
        using var scope = NewDisposeScope();
        return PerSample(predicted, target, timesteps, scheduler, snrAlphasCumprod, prediction, minSnrGamma, settings, masks, lossWeights).mean().MoveToOuterDisposeScope();
    }

    /// <summary>Each sample's loss before the batch mean (see <see cref="Compute"/>).</summary>
    public static Tensor PerSample(Tensor predicted, Tensor target, Tensor timesteps, DdpmScheduler scheduler, Tensor snrAlphasCumprod, PredictionKind prediction,
        double? minSnrGamma, LossSettings settings, Tensor? masks = null, Tensor? lossWeights = null)
    {
        using var scope = NewDisposeScope();
        Tensor? huberC = settings.Type is LossType.Huber or LossType.SmoothL1
            ? HuberThreshold(settings.HuberSchedule, settings.HuberC, timesteps, scheduler.AlphasCumprod, scheduler.TrainTimesteps)
            : null;
        var elementwise = Elementwise(predicted, target, settings.Type, huberC);
        if (masks is not null)
            elementwise = ApplyMask(elementwise, masks);
        var loss = elementwise.mean(Enumerable.Range(1, (int)elementwise.dim() - 1).Select(d => (long)d).ToArray());
        if (lossWeights is not null)
            loss = loss * lossWeights.to(loss.dtype);
        if (minSnrGamma is not null || settings.VPredLikeLoss is not null || settings.DebiasedEstimation)
        {
            var snr = Snr(snrAlphasCumprod, timesteps);
            if (minSnrGamma is { } gamma)
                loss = ApplySnrWeight(loss, snr, gamma, prediction);
            if (settings.VPredLikeLoss is { } vPredLike)
                loss = AddVPredictionLikeLoss(loss, snr, vPredLike);
            if (settings.DebiasedEstimation)
                loss = ApplyDebiasedEstimation(loss, snr, prediction);
        }

        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>sd-scripts' <c>conditional_loss(..., reduction="none", huber_c)</c>.</summary>
    public static Tensor Elementwise(Tensor predicted, Tensor target, LossType type, Tensor? huberC)
    {
        using var scope = NewDisposeScope();
        Tensor result;
        switch (type)
        {
            case LossType.L2:
                result = nn.functional.mse_loss(predicted, target, nn.Reduction.None);
                break;
            case LossType.L1:
                result = nn.functional.l1_loss(predicted, target, nn.Reduction.None);
                break;
            case LossType.Huber:
            case LossType.SmoothL1:
            {
                if (huberC is null)
                    throw new ArgumentNullException(nameof(huberC), "the Huber losses need a threshold per sample");
                var c = huberC.view(new[] { -1L }.Concat(Enumerable.Repeat(1L, (int)predicted.dim() - 1)).ToArray());
                // sqrt((pred - target) ** 2 + huber_c ** 2) - huber_c, then x 2 * huber_c (huber) or x 2 (smooth_l1).
                var root = (predicted - target).Pow(2).Plus(c.Pow(2)).sqrt() - c;
                result = type == LossType.Huber ? c.Times(2.0) * root : root.Times(2.0);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, "unknown loss type");
        }

        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// sd-scripts' <c>apply_masked_loss</c>: the mask averaged down to the loss's spatial size
    /// (<c>interpolate(mode="area")</c>) times the element-wise loss, before the per-sample mean (which still divides by
    /// every element, masked or not).
    /// </summary>
    public static Tensor ApplyMask(Tensor elementwise, Tensor masks)
    {
        using var scope = NewDisposeScope();
        var resized = nn.functional.interpolate(masks.to(elementwise.dtype), size: new[] { elementwise.shape[2], elementwise.shape[3] }, mode: InterpolationMode.Area);
        return (elementwise * resized).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// sd-scripts' <c>get_huber_threshold_if_needed</c> (with <c>huber_scale</c> 1): one float32 threshold per sample.
    /// </summary>
    public static Tensor HuberThreshold(HuberSchedule schedule, double huberC, Tensor timesteps, Tensor alphasCumprod, int trainTimesteps)
    {
        using var scope = NewDisposeScope();
        Tensor result;
        switch (schedule)
        {
            case HuberSchedule.Exponential:
            {
                // alpha = -math.log(huber_c) / num_train_timesteps; torch.exp(-alpha * timesteps) * huber_scale
                double alpha = -Math.Log(huberC) / trainTimesteps;
                result = timesteps.to(ScalarType.Float32).Times(-alpha).exp().Times(LossSettings.HuberScale);
                break;
            }
            case HuberSchedule.Snr:
            {
                // sigmas = ((1 - acp_t) / acp_t) ** 0.5; (1 - huber_c) / (1 + sigmas) ** 2 + huber_c
                var selected = alphasCumprod.to(timesteps.device).index_select(0, timesteps);
                var sigmas = (selected.SubtractedFrom(1.0) / selected).Pow(0.5);
                result = sigmas.Plus(1.0).Pow(2).Divides(1 - huberC).Plus(huberC);
                break;
            }
            case HuberSchedule.Constant:
            {
                using var value = (huberC * LossSettings.HuberScale).ToScalar();
                result = full(new[] { timesteps.shape[0] }, value, ScalarType.Float32, timesteps.device);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(schedule), schedule, "unknown Huber schedule");
        }

        return result.MoveToOuterDisposeScope();
    }

    /// <summary>sd-scripts' <c>all_snr[t]</c>: (sqrt(acp) / sqrt(1 - acp)) ** 2 at each timestep.</summary>
    public static Tensor Snr(Tensor alphasCumprod, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var acp = alphasCumprod.to(timesteps.device);
        var all = (acp.sqrt() / acp.SubtractedFrom(1.0).sqrt()).Pow(2);
        return all.index_select(0, timesteps).MoveToOuterDisposeScope();
    }

    /// <summary>sd-scripts' <c>apply_snr_weight</c>: loss x min(snr, gamma) / snr (/ (snr + 1) for v-prediction).</summary>
    public static Tensor ApplySnrWeight(Tensor loss, Tensor snr, double gamma, PredictionKind prediction)
    {
        using var scope = NewDisposeScope();
        var minimum = snr.ClampMax(gamma);
        var weight = prediction == PredictionKind.Velocity ? minimum / snr.Plus(1.0) : minimum / snr;
        return (loss * weight).MoveToOuterDisposeScope();
    }

    /// <summary>sd-scripts' <c>add_v_prediction_like_loss</c>: loss + loss / scale x v, scale = min(snr, 1000) / (min(snr, 1000) + 1).</summary>
    public static Tensor AddVPredictionLikeLoss(Tensor loss, Tensor snr, double vPredLikeLoss)
    {
        using var scope = NewDisposeScope();
        var clamped = snr.ClampMax(1000.0);
        var scale = clamped / clamped.Plus(1.0);
        return loss.Plus((loss / scale).Times(vPredLikeLoss)).MoveToOuterDisposeScope();
    }

    /// <summary>sd-scripts' <c>apply_debiased_estimation</c>: loss x 1 / sqrt(min(snr, 1000)) (1 / (min(snr, 1000) + 1) for v-prediction).</summary>
    public static Tensor ApplyDebiasedEstimation(Tensor loss, Tensor snr, PredictionKind prediction)
    {
        using var scope = NewDisposeScope();
        var clamped = snr.ClampMax(1000.0);
        var weight = prediction == PredictionKind.Velocity ? clamped.Plus(1.0).Divides(1.0) : clamped.sqrt().Divides(1.0);
        return (weight * loss).MoveToOuterDisposeScope();
    }
}
