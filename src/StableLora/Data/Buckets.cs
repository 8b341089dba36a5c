namespace StableLora.Data;

/// <summary>One image's bucket: the bucket's size, the size the image is resized to before the crop, and the aspect-ratio error.</summary>
/// <param name="Width">The bucket's width in pixels.</param>
/// <param name="Height">The bucket's height in pixels.</param>
/// <param name="ResizedWidth">The image's width after resizing (at least <paramref name="Width"/>; the excess is cropped).</param>
/// <param name="ResizedHeight">The image's height after resizing (at least <paramref name="Height"/>).</param>
/// <param name="AspectError">The bucket's aspect ratio minus the image's (sd-scripts' <c>ar_error</c>).</param>
internal readonly record struct BucketChoice(int Width, int Height, int ResizedWidth, int ResizedHeight, double AspectError);

/// <summary>
/// Aspect-ratio bucketing with sd-scripts' arithmetic (library/model_util.py make_bucket_resolutions and
/// library/train_util.py BucketManager.select_bucket): buckets in steps of <c>bucket_reso_steps</c> whose area is at
/// most resolution², each image to the bucket of the closest aspect ratio, resized to cover it; or, with
/// <c>bucket_no_upscale</c>, buckets from the image's own size, shrunk to the area only when larger.
/// </summary>
internal sealed class BucketSelector
{
    private readonly bool _noUpscale;
    private readonly int _maxArea;
    private readonly int _steps;
    private readonly (int W, int H)[] _predefined;
    private readonly double[] _predefinedRatios;
    private readonly HashSet<(int W, int H)> _predefinedSet;

    /// <param name="noUpscale">sd-scripts' bucket_no_upscale.</param>
    /// <param name="resolution">The training resolution (square: the area is resolution²).</param>
    /// <param name="minSize">min_bucket_reso (ignored with <paramref name="noUpscale"/>).</param>
    /// <param name="maxSize">max_bucket_reso (ignored with <paramref name="noUpscale"/>).</param>
    /// <param name="steps">bucket_reso_steps.</param>
    public BucketSelector(bool noUpscale, int resolution, int minSize, int maxSize, int steps)
    {
        _noUpscale = noUpscale;
        _maxArea = resolution * resolution;
        _steps = steps;
        _predefined = noUpscale ? Array.Empty<(int, int)>() : Resolutions(resolution, resolution, minSize, maxSize, steps).ToArray();
        _predefinedRatios = _predefined.Select(r => (double)r.W / r.H).ToArray();
        _predefinedSet = _predefined.ToHashSet();
    }

    /// <summary>sd-scripts' make_bucket_resolutions: the square at the area, then every width from min to max in steps with the tallest height that fits, both ways round; sorted.</summary>
    public static List<(int W, int H)> Resolutions(int maxWidth, int maxHeight, int minSize, int maxSize, int divisible)
    {
        long maxArea = (long)maxWidth * maxHeight;
        var resos = new HashSet<(int, int)>();
        int side = (int)Math.Floor(Math.Sqrt(maxArea) / divisible) * divisible;
        resos.Add((side, side));
        for (int width = minSize; width <= maxSize; width += divisible)
        {
            int height = (int)Math.Min(maxSize, maxArea / width / divisible * divisible);
            if (height >= minSize)
            {
                resos.Add((width, height));
                resos.Add((height, width));
            }
        }

        return resos.OrderBy(r => r.Item1).ThenBy(r => r.Item2).ToList();
    }

    /// <summary>sd-scripts' BucketManager.select_bucket for an image of the given (upright) size.</summary>
    /// <exception cref="InvalidDataException">With no-upscale, an image so long that a side of its bucket rounds to 0 (sd-scripts fails on it too).</exception>
    public BucketChoice Select(int imageWidth, int imageHeight)
    {
        double aspect = (double)imageWidth / imageHeight;
        int bucketWidth, bucketHeight, resizedWidth, resizedHeight;
        if (!_noUpscale)
        {
            (int W, int H) reso = (imageWidth, imageHeight);
            if (!_predefinedSet.Contains(reso))
            {
                int best = 0;
                double bestError = double.PositiveInfinity;
                for (int i = 0; i < _predefinedRatios.Length; i++)
                {
                    double error = Math.Abs(_predefinedRatios[i] - aspect);
                    if (error < bestError)
                    {
                        best = i;
                        bestError = error;
                    }
                }

                reso = _predefined[best];
            }

            double bucketAspect = (double)reso.W / reso.H;
            double scale = aspect > bucketAspect ? (double)reso.H / imageHeight : (double)reso.W / imageWidth;
            resizedWidth = (int)(imageWidth * scale + 0.5);
            resizedHeight = (int)(imageHeight * scale + 0.5);
            (bucketWidth, bucketHeight) = reso;
        }
        else
        {
            if ((long)imageWidth * imageHeight > _maxArea)
            {
                double width = Math.Sqrt(_maxArea * aspect);
                double height = _maxArea / width;
                int widthRounded = RoundToSteps(width);
                int heightInWidthRounded = RoundToSteps(widthRounded / aspect);
                int heightRounded = RoundToSteps(height);
                int widthInHeightRounded = RoundToSteps(heightRounded * aspect);
                if (heightInWidthRounded == 0 || heightRounded == 0)
                    throw new InvalidDataException($"an image of {imageWidth}x{imageHeight} is too long for buckets of area {_maxArea} in steps of {_steps}");
                double widthRoundedAspect = (double)widthRounded / heightInWidthRounded;
                double heightRoundedAspect = (double)widthInHeightRounded / heightRounded;
                if (Math.Abs(widthRoundedAspect - aspect) < Math.Abs(heightRoundedAspect - aspect))
                    (resizedWidth, resizedHeight) = (widthRounded, (int)(widthRounded / aspect + 0.5));
                else
                    (resizedWidth, resizedHeight) = ((int)(heightRounded * aspect + 0.5), heightRounded);
            }
            else
            {
                (resizedWidth, resizedHeight) = (imageWidth, imageHeight);
            }

            bucketWidth = resizedWidth - resizedWidth % _steps;
            bucketHeight = resizedHeight - resizedHeight % _steps;
            if (bucketWidth == 0 || bucketHeight == 0)
                throw new InvalidDataException($"an image of {imageWidth}x{imageHeight} is smaller than one bucket step ({_steps} pixels)");
        }

        return new BucketChoice(bucketWidth, bucketHeight, resizedWidth, resizedHeight, (double)bucketWidth / bucketHeight - aspect);
    }

    private int RoundToSteps(double x)
    {
        int rounded = (int)(x + 0.5);
        return rounded - rounded % _steps;
    }
}
