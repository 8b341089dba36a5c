using StableLora.Vae;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>
/// diffusers' VAE tiling (<c>enable_vae_tiling</c>): large images are encoded and decoded in overlapping tiles of the
/// VAE's <c>sample_size</c> (512 px for SD, 64 latents), and neighbouring tiles are blended linearly over a quarter of
/// a tile. Memory then stays that of one tile. Each tile is normalised on its own, so the result is close to, not
/// equal to, the whole-image path; inputs no larger than one tile take the whole-image path exactly.
/// </summary>
internal sealed class VaeTiling
{
    private const double OverlapFactor = 0.25;

    /// <param name="tileSampleSize">The tile side in pixels; null: the VAE config's sample_size (diffusers' default).</param>
    public VaeTiling(int? tileSampleSize = null)
    {
        TileSampleSize = tileSampleSize;
    }

    public int? TileSampleSize { get; }

    public Tensor Decode(AutoencoderKL vae, Tensor latents)
    {
        int tileSample = TileSampleSize ?? vae.Config.SampleSize;
        int tileLatent = tileSample / vae.Config.ScaleFactor;
        if (latents.shape[^1] <= tileLatent && latents.shape[^2] <= tileLatent)
            return vae.Decode(latents);

        int overlap = (int)(tileLatent * (1 - OverlapFactor));
        int blend = (int)(tileSample * OverlapFactor);
        int limit = tileSample - blend;
        return Tiled(latents, overlap, tileLatent, blend, limit, vae.Decode);
    }

    /// <summary>The latent distribution's moments (mean and log-variance), tiled over the image.</summary>
    public DiagonalGaussianDistribution Encode(AutoencoderKL vae, Tensor images)
    {
        int tileSample = TileSampleSize ?? vae.Config.SampleSize;
        int tileLatent = tileSample / vae.Config.ScaleFactor;
        if (images.shape[^1] <= tileSample && images.shape[^2] <= tileSample)
            return vae.Encode(images);

        int overlap = (int)(tileSample * (1 - OverlapFactor));
        int blend = (int)(tileLatent * OverlapFactor);
        int limit = tileLatent - blend;
        return new DiagonalGaussianDistribution(Tiled(images, overlap, tileSample, blend, limit, tile => vae.Encode(tile).Moments));
    }

    /// <summary>Applies <paramref name="transform"/> tile by tile (tiles of <paramref name="tileSize"/> every <paramref name="stride"/>), blends neighbours over <paramref name="blend"/> outputs and keeps <paramref name="limit"/> of each.</summary>
    internal static Tensor Tiled(Tensor input, int stride, int tileSize, int blend, int limit, Func<Tensor, Tensor> transform)
    {
        using var scope = NewDisposeScope();
        var rows = new List<List<Tensor>>();
        for (long i = 0; i < input.shape[2]; i += stride)
        {
            var row = new List<Tensor>();
            for (long j = 0; j < input.shape[3]; j += stride)
            {
                var tile = input.narrow(2, i, Math.Min(tileSize, input.shape[2] - i)).narrow(3, j, Math.Min(tileSize, input.shape[3] - j));
                row.Add(transform(tile));
            }

            rows.Add(row);
        }

        var resultRows = new List<Tensor>();
        for (int i = 0; i < rows.Count; i++)
        {
            var resultRow = new List<Tensor>();
            for (int j = 0; j < rows[i].Count; j++)
            {
                var tile = rows[i][j];
                if (i > 0)
                    tile = BlendVertical(rows[i - 1][j], tile, blend);
                if (j > 0)
                    tile = BlendHorizontal(rows[i][j - 1], tile, blend);
                rows[i][j] = tile;
                resultRow.Add(tile.narrow(2, 0, Math.Min(limit, tile.shape[2])).narrow(3, 0, Math.Min(limit, tile.shape[3])));
            }

            resultRows.Add(cat(resultRow, 3));
        }

        return cat(resultRows, 2).MoveToOuterDisposeScope();
    }

    private static Tensor BlendVertical(Tensor above, Tensor tile, int extent)
    {
        extent = (int)Math.Min(Math.Min(above.shape[2], tile.shape[2]), extent);
        if (extent == 0)
            return tile;
        var weights = TensorMath.Arange(extent, float32, tile.device).DividedBy(extent).to(tile.dtype).reshape(1, 1, extent, 1);
        var blended = (above.narrow(2, above.shape[2] - extent, extent) * weights.SubtractedFrom(1)).Plus(tile.narrow(2, 0, extent) * weights);
        return cat(new[] { blended, tile.narrow(2, extent, tile.shape[2] - extent) }, 2);
    }

    private static Tensor BlendHorizontal(Tensor left, Tensor tile, int extent)
    {
        extent = (int)Math.Min(Math.Min(left.shape[3], tile.shape[3]), extent);
        if (extent == 0)
            return tile;
        var weights = TensorMath.Arange(extent, float32, tile.device).DividedBy(extent).to(tile.dtype).reshape(1, 1, 1, extent);
        var blended = (left.narrow(3, left.shape[3] - extent, extent) * weights.SubtractedFrom(1)).Plus(tile.narrow(3, 0, extent) * weights);
        return cat(new[] { blended, tile.narrow(3, extent, tile.shape[3] - extent) }, 3);
    }
}
