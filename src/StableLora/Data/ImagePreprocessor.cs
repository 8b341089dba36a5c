using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Data;

/// <summary>How training images become tensors.</summary>
/// <param name="Size">The square side in pixels.</param>
/// <param name="RandomCrop">Crop at a random position instead of the centre.</param>
/// <param name="RandomFlip">Mirror horizontally with probability 1/2.</param>
internal sealed record PreprocessOptions(int Size, bool RandomCrop = false, bool RandomFlip = false);

/// <summary>An image as the model sees it, with what was done to it.</summary>
/// <param name="Pixels">[3, H, W] in [-1, 1].</param>
/// <param name="Mask">[1, H, W] in [0, 1], or null.</param>
/// <param name="Flipped">Whether it was mirrored.</param>
/// <param name="Geometry">The resize and crop, as text (everything its pixels depend on besides the file and the flip, when the crop is not random).</param>
internal sealed record PreprocessedImage(Tensor Pixels, Tensor? Mask, bool Flipped, string Geometry);

/// <summary>
/// Resizes the shorter side to the target size (bilinear with antialiasing, as torchvision's Resize), crops a square
/// (centre or random), optionally mirrors, and maps RGB to [-1, 1] as ToTensor + Normalize(0.5, 0.5) do.
/// </summary>
internal static class ImagePreprocessor
{
    public static Tensor ToTensor(Image<Rgb24> image, PreprocessOptions options, Random random) => ToTensors(image, null, options, random).Pixels;

    private const string Resampler = "triangle-antialiased/1";

    /// <summary>
    /// As <see cref="ToTensor(Image{Rgb24}, PreprocessOptions, Random)"/>, and the mask (when given) resized, cropped and
    /// flipped the same way: [1, size, size] in [0, 1].
    /// </summary>
    public static PreprocessedImage ToTensors(Image<Rgb24> image, Image<L8>? mask, PreprocessOptions options, Random random)
    {
        int size = options.Size;
        double scale = (double)size / Math.Min(image.Width, image.Height);
        int width = Math.Max(size, (int)Math.Round(image.Width * scale));
        int height = Math.Max(size, (int)Math.Round(image.Height * scale));
        int left = options.RandomCrop ? random.Next(width - size + 1) : (int)Math.Round((width - size) / 2.0);
        int top = options.RandomCrop ? random.Next(height - size + 1) : (int)Math.Round((height - size) / 2.0);
        bool flip = options.RandomFlip && random.Next(2) == 1;
        var geometry = new Geometry(width, height, new Rectangle(left, top, size, size), flip);
        return new PreprocessedImage(Normalised(geometry.Apply(image), size, size), mask is null ? null : MaskTensor(geometry.Apply(mask), size, size), flip,
            geometry.Describe(image));
    }

    /// <summary>
    /// An image for its bucket, as sd-scripts' trim_and_resize_if_required: resized to the bucket's resized size
    /// (bilinear with antialiasing), the excess width and height cropped (centred as <c>excess // 2</c>, or at a random
    /// offset from 0 to the excess), optionally mirrored; [3, bucket height, bucket width] in [-1, 1].
    /// </summary>
    public static Tensor ToTensor(Image<Rgb24> image, BucketChoice bucket, bool randomCrop, bool randomFlip, Random random) =>
        ToTensors(image, null, bucket, randomCrop, randomFlip, random).Pixels;

    /// <summary>As the bucket <c>ToTensor</c>, and the mask (when given) transformed the same way: [1, bucket height, bucket width] in [0, 1].</summary>
    public static PreprocessedImage ToTensors(Image<Rgb24> image, Image<L8>? mask, BucketChoice bucket, bool randomCrop, bool randomFlip, Random random)
    {
        int width = bucket.ResizedWidth, height = bucket.ResizedHeight;
        int left = randomCrop ? random.Next(width - bucket.Width + 1) : (width - bucket.Width) / 2;
        int top = randomCrop ? random.Next(height - bucket.Height + 1) : (height - bucket.Height) / 2;
        bool flip = randomFlip && random.Next(2) == 1;
        var geometry = new Geometry(width, height, new Rectangle(left, top, bucket.Width, bucket.Height), flip);
        return new PreprocessedImage(Normalised(geometry.Apply(image), bucket.Width, bucket.Height),
            mask is null ? null : MaskTensor(geometry.Apply(mask), bucket.Width, bucket.Height), flip, geometry.Describe(image));
    }

    /// <summary>A mask as [1, height, width] weights in [0, 1] (byte / 255); disposes <paramref name="working"/>.</summary>
    private static Tensor MaskTensor(Image<L8> working, int width, int height)
    {
        using var owned = working;
        var values = new byte[width * height];
        working.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < height; y++)
            {
                var row = rows.GetRowSpan(y);
                for (int x = 0; x < width; x++)
                    values[y * width + x] = row[x].PackedValue;
            }
        });
        using var bytes = tensor(values, new long[] { 1, height, width });
        using var unit = bytes.to(float32);
        return unit.DividedBy(255.0f);
    }

    /// <summary>Resize to (Width, Height) when the image differs, crop, mirror: the same for an image and its mask.</summary>
    private sealed record Geometry(int Width, int Height, Rectangle Crop, bool Flip)
    {
        public string Describe(Image<Rgb24> source) => string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{source.Width}x{source.Height} resized to {Width}x{Height} ({Resampler}), cropped to {Crop.Width}x{Crop.Height} at {Crop.X},{Crop.Y}");

        public Image<TPixel> Apply<TPixel>(Image<TPixel> image)
            where TPixel : unmanaged, IPixel<TPixel>
        {
            return image.Clone(x =>
            {
                if (Width != image.Width || Height != image.Height)
                    x.Resize(Width, Height, KnownResamplers.Triangle);
                x.Crop(Crop);
                if (Flip)
                    x.Flip(FlipMode.Horizontal);
            });
        }
    }

    private static Tensor Normalised(Image<Rgb24> working, int width, int height)
    {
        using var owned = working;
        var pixels = new byte[3 * width * height];
        working.ProcessPixelRows(rows =>
        {
            int plane = width * height;
            for (int y = 0; y < height; y++)
            {
                var row = rows.GetRowSpan(y);
                for (int x = 0; x < width; x++)
                {
                    pixels[y * width + x] = row[x].R;
                    pixels[plane + y * width + x] = row[x].G;
                    pixels[2 * plane + y * width + x] = row[x].B;
                }
            }
        });

        using var bytes = tensor(pixels, new long[] { 3, height, width });
        using var unit = bytes.to(float32).DividedByInPlace(255.0f);
        using var centred = unit.Minus(0.5f);
        return centred.DividedBy(0.5f);
    }
}
