using StableLora.Layers;
using StableLora.Schedulers;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>
/// The parts of diffusers' (v0.21.4) <c>StableDiffusionImg2ImgPipeline</c> that differ from text to image:
/// <c>VaeImageProcessor.preprocess</c> of the init image, <c>get_timesteps</c> and <c>prepare_latents</c>.
/// </summary>
internal static class ImageToImage
{
    /// <summary>
    /// The output size diffusers gives an init image when no size is asked for: each side rounded down to a multiple of
    /// the VAE factor (<c>VaeImageProcessor.get_default_height_width</c>).
    /// </summary>
    public static (int Width, int Height) DefaultSize(RgbImage image, int factor) => (image.Width - image.Width % factor, image.Height - image.Height % factor);

    /// <summary>
    /// <c>get_timesteps</c>: init_timestep = min(int(steps * strength), steps), t_start = max(steps - init_timestep, 0);
    /// the loop runs <c>scheduler.timesteps[t_start * order:]</c> (order 1 for every scheduler here). PNDM's PLMS
    /// schedule has one timestep more than the steps, so it keeps at least its final step.
    /// </summary>
    /// <exception cref="InvalidOptionsException">No timestep is left (diffusers then noises an empty batch and fails).</exception>
    public static int StartIndex(IScheduler scheduler, int steps, double strength)
    {
        int initTimestep = Math.Min((int)(steps * strength), steps);
        int start = Math.Max(steps - initTimestep, 0);
        if (start >= scheduler.StepCount)
        {
            throw new InvalidOptionsException(nameof(GenerationOptions.Strength), strength,
                $"int(Steps * Strength) = {initTimestep} leaves no timestep to denoise ({SchedulerKindNames.ClassName(scheduler.Kind)}, {steps} steps) (diffusers then noises an empty batch and fails); raise Strength or Steps");
        }
        return start;
    }

    /// <summary>
    /// <c>VaeImageProcessor.preprocess</c> of a PIL image: resized to <paramref name="width"/> x <paramref name="height"/>
    /// when its size differs (PIL's Lanczos, <see cref="PilLanczos"/>), then float32 pixel / 255, then 2 x - 1:
    /// [1, 3, height, width] on the CPU.
    /// </summary>
    public static Tensor Preprocess(RgbImage image, int width, int height)
    {
        byte[] pixels = image.Width != width || image.Height != height
            ? PilLanczos.Resize(image.Pixels, image.Width, image.Height, width, height)
            : image.Pixels;

        int plane = width * height;
        var values = new float[3 * plane];
        for (int i = 0; i < plane; i++)
        {
            for (int c = 0; c < 3; c++)
            {
                // numpy: uint8 -> float32, / 255.0 in float32, then 2.0 * x - 1.0 in float32 (two roundings).
                float scaled = pixels[i * 3 + c] / 255f;
                float doubled = 2f * scaled;
                values[c * plane + i] = doubled - 1f;
            }
        }
        return tensor(values, new long[] { 1, 3, height, width });
    }

    /// <summary>
    /// <c>prepare_latents</c>: VAE-encode the image, <c>latent_dist.sample(generator)</c> (the first draw), times the
    /// scaling factor, repeated for <paramref name="count"/> images; then noise of that shape (the second draw) and
    /// <c>scheduler.add_noise</c> at the first loop timestep. Draws on the CPU generator in the model's dtype, as
    /// diffusers' <c>randn_tensor</c> does.
    /// </summary>
    public static Tensor PrepareLatents(StableDiffusionModel model, IScheduler scheduler, Tensor image, int count, int startIndex,
        Generator generator, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var vae = model.Vae;
        var distribution = vae.Encode(image.to(dtype, device).to(vae.Spec.DType));
        var sample = distribution.Sample(generator);
        var initLatents = sample.Times(vae.Config.ScalingFactor).to(dtype);
        if (count > 1)
            initLatents = cat(Enumerable.Repeat(initLatents, count).ToArray(), 0);
        var noise = randn(initLatents.shape, dtype, CPU, generator: generator).to(device);
        var latents = scheduler.AddNoise(initLatents, noise, startIndex);
        return latents.MoveToOuterDisposeScope();
    }
}
