using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>
/// A cheap preview of SD 1.x/2.x latents without the VAE: each latent pixel's four channels mapped to RGB by one fixed
/// linear map (the "latent to RGB" factors ComfyUI and AUTOMATIC1111's cheap approximation use for SD 1.5), at latent
/// resolution (64 × 64 for a 512 px image). Good enough to watch an image form, not to judge it.
/// </summary>
internal static class LatentPreview
{
    // Rows: latent channels 0-3; columns: R, G, B. Data (fitted coefficients), as published with ComfyUI's SD15 latent format.
    private static readonly float[] Factors =
    {
        0.3512f, 0.2297f, 0.3227f,
        0.3250f, 0.4974f, 0.2350f,
        -0.2829f, 0.1762f, 0.2721f,
        -0.2120f, -0.2616f, -0.7177f,
    };

    /// <summary>The preview of the first image of <paramref name="latents"/> [B, 4, h, w], or null for latents of another channel count.</summary>
    public static RgbImage? Of(Tensor latents)
    {
        if (latents.dim() != 4 || latents.shape[1] != 4)
            return null;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var factors = tensor(Factors, new long[] { 4, 3 }, float32);
        var rgb = latents[0].detach().to(float32).cpu().permute(1, 2, 0).matmul(factors);
        var levels = rgb.Plus(1.0).DividedBy(2.0).Clamp(0, 1).Times(255f).round().to(ScalarType.Byte).contiguous();
        return new RgbImage((int)latents.shape[3], (int)latents.shape[2], levels.bytes.ToArray());
    }
}
