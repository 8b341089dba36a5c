using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using StableLora.AttentionProcessors;
using StableLora.Diagnostics;
using StableLora.Schedulers;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>
/// diffusers' <c>StableDiffusionPipeline.__call__</c>: encode the prompt (and the negative prompt for classifier-free
/// guidance, batched as [negative, positive]), draw the initial latents from a CPU generator seeded like
/// <c>torch.Generator("cpu").manual_seed(seed)</c> and scale them by the scheduler's init sigma, denoise, decode with
/// the VAE (latents / scaling factor), and map to [0, 1] NHWC float32.
/// </summary>
internal static class TextToImage
{
    public static (Tensor Images, ulong Seed, int Width, int Height) Run(StableDiffusionModel model, IScheduler scheduler, string prompt, GenerationOptions options,
        VaeTiling? tiling, ILogger logger, IProgress<GenerationProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var (width, height) = CheckOptions(model, options);
        scheduler.SetTimesteps(options.Steps);
        // img2img runs the schedule's last timesteps only (diffusers' get_timesteps).
        int start = options.InitImage is null ? 0 : ImageToImage.StartIndex(scheduler, options.Steps, options.Strength ?? GenerationOptions.DefaultStrength);
        var unet = model.Unet;
        var device = unet.Spec.Device;
        var dtype = unet.Spec.DType;
        int count = options.ImageCount;
        bool guided = options.GuidanceScale > 1.0;
        var clock = Stopwatch.StartNew();

        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        Tensor conditioning;
        string negative = options.NegativePrompt ?? "";
        if (options.LongPrompts == LongPromptMode.Chunk)
        {
            // A1111: both prompts chunked and padded to the same chunk count, so that they batch together.
            var texts = guided ? new[] { negative, prompt } : new[] { prompt };
            var encoded = model.EncodeChunkedPrompts(texts, options.ClipSkip).to(dtype);
            conditioning = encoded.repeat_interleave(count, 0);
        }
        else
        {
            WarnIfTruncated(model, prompt, "prompt", logger);
            conditioning = model.EncodePrompts(new[] { prompt }, options.ClipSkip).to(dtype).repeat(count, 1, 1);
            if (guided)
            {
                WarnIfTruncated(model, negative, "negative prompt", logger);
                var unconditional = model.EncodePrompts(new[] { negative }, options.ClipSkip).to(dtype).repeat(count, 1, 1);
                conditioning = cat(new[] { unconditional, conditioning }, 0);
            }
        }

        ulong seed = options.Seed ?? (ulong)Random.Shared.NextInt64(0, uint.MaxValue);
        using var generator = new Generator(seed, CPU);
        long[] shape = { count, unet.Config.InChannels, height / model.VaeScaleFactor, width / model.VaeScaleFactor };
        Tensor latents;
        if (options.InitImage is { } initImage)
        {
            var pixels = ImageToImage.Preprocess(initImage, width, height);
            latents = ImageToImage.PrepareLatents(model, scheduler, pixels, count, start, generator, dtype, device);
            scheduler.BeginAt(start);
        }
        else if (options.InitialLatents is { } given)
        {
            if (!given.shape.SequenceEqual(shape))
            {
                throw new InvalidOptionsException(nameof(options.InitialLatents), $"[{string.Join(", ", given.shape)}]",
                    $"this call needs latents of shape [{string.Join(", ", shape)}] (ImageCount, latent channels, Height / {model.VaeScaleFactor}, Width / {model.VaeScaleFactor})");
            }

            latents = given.to(dtype, device).Times(scheduler.InitNoiseSigma);
        }
        else
        {
            // diffusers' randn_tensor draws on the generator's device (the CPU) in the model's dtype, then moves the result.
            latents = randn(shape, dtype, CPU, generator: generator).to(device).Times(scheduler.InitNoiseSigma);
        }

        var attention = AttentionOptions.Default;
        int total = scheduler.StepCount - start;
        for (int i = start; i < scheduler.StepCount; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var stepScope = NewDisposeScope();
            var timestep = scheduler.TimestepAt(i).to(device);
            var input = scheduler.ScaleModelInput(guided ? cat(new[] { latents, latents }, 0) : latents, i);
            var noise = unet.Forward(input.to(dtype), timestep, conditioning, attention);
            if (guided)
            {
                var halves = noise.chunk(2, 0);
                noise = halves[0].Plus((halves[1] - halves[0]).Times(options.GuidanceScale));
            }

            var step = scheduler.Step(noise, i, latents, generator);
            // The preview shows the scheduler's estimate of the final latents where it gives one (as UIs do), else the current ones.
            var preview = progress is not null && options.Previews ? LatentPreview.Of(step.PredOriginalSample ?? step.PrevSample) : null;
            step.PredOriginalSample?.Dispose();
            latents = step.PrevSample.MoveToOuterDisposeScope();
            progress?.Report(new GenerationProgress(i - start + 1, total, clock.Elapsed) { Preview = preview });
        }

        var images = Decode(model, latents, tiling);
        return (images.MoveToOuterDisposeScope(), seed, width, height);
    }

    /// <summary>VAE decode of latents, then (x / 2 + 0.5).clamp(0, 1) as NHWC float32 on the CPU.</summary>
    public static Tensor Decode(StableDiffusionModel model, Tensor latents, VaeTiling? tiling)
    {
        using var scope = NewDisposeScope();
        var vae = model.Vae;
        var scaled = latents.DividedBy(vae.Config.ScalingFactor).to(vae.Spec.DType);
        var decoded = tiling is null ? vae.Decode(scaled) : tiling.Decode(vae, scaled);
        var images = decoded.to(float32).DividedBy(2).Plus(0.5).Clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous();
        return images.MoveToOuterDisposeScope();
    }

    /// <summary>Every problem with <paramref name="options"/> at once, each naming the option and its value.</summary>
    /// <exception cref="InvalidOptionsException">An option is out of range.</exception>
    internal static (int Width, int Height) CheckOptions(StableDiffusionModel model, GenerationOptions options)
    {
        int factor = model.VaeScaleFactor;
        var initSize = options.InitImage is { } init ? ImageToImage.DefaultSize(init, factor) : ((int Width, int Height)?)null;
        int width = options.Width ?? initSize?.Width ?? model.DefaultImageSize;
        int height = options.Height ?? initSize?.Height ?? model.DefaultImageSize;
        var errors = new List<OptionError>();
        void Check(bool ok, string option, object? value, string message)
        {
            if (!ok)
                errors.Add(new OptionError(option, value is null ? null : Convert.ToString(value, CultureInfo.InvariantCulture), message));
        }

        Check(width > 0 && width % factor == 0, nameof(options.Width), width, $"must be a positive multiple of {factor} (the VAE's scale factor)");
        Check(height > 0 && height % factor == 0, nameof(options.Height), height, $"must be a positive multiple of {factor} (the VAE's scale factor)");
        Check(options.Steps >= 1, nameof(options.Steps), options.Steps, "must be at least 1");
        Check(double.IsFinite(options.GuidanceScale) && options.GuidanceScale >= 0, nameof(options.GuidanceScale), options.GuidanceScale,
            "must be a finite number, 0 or more (at 1 or below no unconditional pass is made)");
        Check(options.ImageCount >= 1, nameof(options.ImageCount), options.ImageCount, "must be at least 1");
        int layers = model.TextEncoder.Config.NumHiddenLayers;
        Check(options.ClipSkip >= 1 && options.ClipSkip <= layers, nameof(options.ClipSkip), options.ClipSkip,
            $"must be between 1 (the last layer, no skip) and {layers} (the text encoder's layer count); A1111's and kohya's numbering, not diffusers'");
        Check(Enum.IsDefined(options.LongPrompts), nameof(options.LongPrompts), options.LongPrompts, "expected Truncate or Chunk");
        Check(double.IsFinite(options.LoraScale), nameof(options.LoraScale), options.LoraScale, "must be a finite number");
        Check(options.Loras is not null, nameof(options.Loras), null, "must be a list (it may be empty)");
        for (int i = 0; options.Loras is not null && i < options.Loras.Count; i++)
        {
            var lora = options.Loras[i];
            string name = $"{nameof(options.Loras)}[{i}]";
            Check(lora is not null && !string.IsNullOrWhiteSpace(lora.Path), name, lora?.Path, "a LoRA file is needed");
            Check(lora is null || double.IsFinite(lora.Weight), $"{name}.Weight", lora?.Weight, "must be a finite number");
            Check(lora?.TextEncoderWeight is not { } te || double.IsFinite(te), $"{name}.TextEncoderWeight", lora?.TextEncoderWeight, "must be a finite number");
        }
        if (options.InitialLatents is { } latents)
        {
            Check(!latents.IsInvalid, nameof(options.InitialLatents), "(disposed)", "the tensor has been disposed");
            if (!latents.IsInvalid)
                Check(latents.is_floating_point(), nameof(options.InitialLatents), latents.dtype, "must be a floating-point tensor");
        }

        if (options.InitImage is { } image)
        {
            Check(image.Width >= factor && image.Height >= factor, nameof(options.InitImage), $"{image.Width}x{image.Height}",
                $"must be at least {factor}x{factor} pixels (each side is rounded down to a multiple of {factor}, the VAE's scale factor)");
            Check(options.InitialLatents is null, nameof(options.InitialLatents), "(given)", "cannot be combined with InitImage (image to image makes its own latents)");
        }
        if (options.Strength is { } strength)
        {
            Check(options.InitImage is not null, nameof(options.Strength), strength, "applies to image to image only: give InitImage too");
            Check(double.IsFinite(strength) && strength >= 0 && strength <= 1, nameof(options.Strength), strength, "must be between 0 and 1 (diffusers' strength)");
        }

        if (errors.Count > 0)
            throw new InvalidOptionsException(errors);
        return (width, height);
    }

    private static void WarnIfTruncated(StableDiffusionModel model, string text, string which, ILogger logger)
    {
        var tokens = model.Tokenizer.Encode(text);
        if (tokens.Truncated)
            Log.PromptTruncated(logger, which, tokens.DroppedTokenCount, model.Tokenizer.MaxLength);
    }
}
