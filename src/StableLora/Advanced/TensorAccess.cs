using static TorchSharp.torch;

namespace StableLora.Advanced;

/// <summary>
/// The advanced API for TorchSharp users: the only public place where StableLora's generation surface takes or gives a
/// TorchSharp <see cref="Tensor"/>. Everything else works with <see cref="RgbImage"/>, <see cref="GeneratedImage"/> and
/// PNG bytes, so an application that does not use TorchSharp itself never handles a tensor or its lifetime.
/// </summary>
public static class TensorAccess
{
    /// <summary>
    /// The images of <paramref name="result"/> as float32 [count, height, width, 3] in [0, 1] on the CPU (diffusers'
    /// <c>output_type="np"</c>), unquantised: a copy that the caller owns and must dispose (or leave to an enclosing
    /// <c>torch.NewDisposeScope()</c>). Disposing it leaves <paramref name="result"/> usable; disposing the result leaves
    /// the copy valid.
    /// </summary>
    /// <param name="result">A result that has not been disposed.</param>
    /// <exception cref="ArgumentNullException"><paramref name="result"/> is null.</exception>
    public static Tensor GetImageTensor(this GenerationResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        return result.ImageTensor.clone();
    }

    /// <summary>
    /// <paramref name="options"/> starting from <paramref name="latents"/> instead of drawing them (diffusers'
    /// <c>latents=</c>): a floating-point tensor of shape [ImageCount, 4, Height / 8, Width / 8], not disposed until the call
    /// returns. The latents are multiplied by the scheduler's initial noise sigma, as diffusers does. The options keep a
    /// reference, not a copy; the caller still owns the tensor. Cannot be combined with
    /// <see cref="GenerationOptions.InitImage"/>; errors name the option <c>InitialLatents</c>.
    /// </summary>
    /// <param name="options">The other options.</param>
    /// <param name="latents">The initial latents.</param>
    /// <returns>A copy of <paramref name="options"/> with the latents set (the record's <c>with</c>).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="latents"/> is null.</exception>
    public static GenerationOptions WithInitialLatents(this GenerationOptions options, Tensor latents)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(latents);
        return options with { InitialLatents = latents };
    }

    /// <summary>The latents set by <see cref="WithInitialLatents"/> (the caller's tensor itself, not a copy), or null.</summary>
    /// <param name="options">The options.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    public static Tensor? GetInitialLatents(this GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.InitialLatents;
    }
}
