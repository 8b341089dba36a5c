namespace StableLora.Demo;

/// <summary>How well an image matches one shape: the F1 of ink-on-outline (precision) and outline-covered-by-ink (recall) at its best placement.</summary>
internal readonly record struct ShapeMatch(Shape Shape, double F1, double Precision, double Recall, ShapePlacement Placement);

/// <summary>What <see cref="ShapeScores.Recognize"/> found: the best-matching shape and every shape's match.</summary>
internal sealed record ShapeRecognition(ShapeMatch Best, IReadOnlyList<ShapeMatch> Matches)
{
    /// <summary>The match for <paramref name="shape"/>.</summary>
    public ShapeMatch For(Shape shape) => Matches.First(m => m.Shape == shape);
}

/// <summary>
/// The demo's measures, computed on generated images without any model: which shape an image shows (template
/// matching against each shape's outline over a grid of centres and radii, tolerant of a couple of pixels) and how
/// much of the image is ink.
/// </summary>
internal static class ShapeScores
{
    /// <summary>A pixel is ink when its darkest channel is below this (paper is 248, ink 20).</summary>
    private const int InkThreshold = 128;

    /// <summary>
    /// Slack, in pixels at 64 px: ink counts as on the outline when it lies within the stroke's half-width plus this
    /// much of the template's centre line (tight, because a thick stroke already hides a circle inside a square's
    /// band), and the outline counts as drawn where ink lies within this much of it.
    /// </summary>
    private const float ToleranceAt64 = 0.75f;

    public static bool IsInk(byte r, byte g, byte b) => Math.Min(r, Math.Min(g, b)) < InkThreshold;

    /// <summary>The share of the image's pixels that are ink.</summary>
    public static double InkShare(RgbImage image) => Count(image, IsInk) / (double)(image.Width * image.Height);

    /// <summary>
    /// Whether a drawing is a diamond rather than a square: the diamond's outline fits its ink better than the square's
    /// (the demo LoRA's measure; the tiny VAE rounds corners, so the best of all five fits may still be the circle).
    /// </summary>
    public static bool IsDiamondRatherThanSquare(RgbImage image)
    {
        var recognition = Recognize(image);
        return recognition.For(Shape.Diamond).F1 > recognition.For(Shape.Square).F1;
    }

    /// <summary>Matches the image against every shape and returns the best (ties go to the earlier shape).</summary>
    public static ShapeRecognition Recognize(RgbImage image)
    {
        if (image.Width != image.Height)
            throw new ArgumentException($"shape recognition needs a square image, not {image.Width}x{image.Height}", nameof(image));
        var ink = InkPixels(image);
        var covered = Dilate(image, ToleranceAt64 * image.Width / 64f);
        var matches = ShapeSketches.AllShapes.Select(shape => BestPlacement(shape, image.Width, ink, covered)).ToArray();
        var best = matches[0];
        foreach (var match in matches)
        {
            if (match.F1 > best.F1)
                best = match;
        }

        return new ShapeRecognition(best, matches);
    }

    private static ShapeMatch BestPlacement(Shape shape, int size, IReadOnlyList<(float X, float Y)> ink, bool[] covered)
    {
        float step = size / 32f;
        ShapeMatch best = default;
        for (float cx = size * 0.4f; cx <= size * 0.6f + 1e-3f; cx += step)
        {
            for (float cy = size * 0.4f; cy <= size * 0.6f + 1e-3f; cy += step)
            {
                for (float r = size * 0.22f; r <= size * 0.37f + 1e-3f; r += step)
                {
                    var match = Score(shape, new ShapePlacement(cx, cy, r), size, ink, covered);
                    if (match.F1 > best.F1)
                        best = match;
                }
            }
        }

        // Refine around the coarse optimum at a quarter of the grid step.
        var coarse = best.Placement;
        for (int dx = -2; dx <= 2; dx++)
        {
            for (int dy = -2; dy <= 2; dy++)
            {
                for (int dr = -2; dr <= 2; dr++)
                {
                    var placement = new ShapePlacement(coarse.CenterX + dx * step / 4, coarse.CenterY + dy * step / 4, coarse.Radius + dr * step / 4);
                    var match = Score(shape, placement, size, ink, covered);
                    if (match.F1 > best.F1)
                        best = match;
                }
            }
        }

        return best.F1 > 0 ? best : new ShapeMatch(shape, 0, 0, 0, coarse);
    }

    private static ShapeMatch Score(Shape shape, ShapePlacement placement, int size, IReadOnlyList<(float X, float Y)> ink, bool[] covered)
    {
        var outline = ShapeSketches.Outline(shape, placement);
        float reach = ShapeSketches.StrokeWidth(size) / 2 + ToleranceAt64 * size / 64f;
        int onOutline = 0;
        foreach (var (x, y) in ink)
        {
            if (outline.Distance(x, y) <= reach)
                onOutline++;
        }

        var samples = outline.SamplePoints();
        int hit = 0;
        foreach (var (x, y) in samples)
        {
            int px = (int)x, py = (int)y;
            if (px >= 0 && py >= 0 && px < size && py < size && covered[py * size + px])
                hit++;
        }

        double precision = ink.Count == 0 ? 0 : onOutline / (double)ink.Count;
        double recall = samples.Count == 0 ? 0 : hit / (double)samples.Count;
        double f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall);
        return new ShapeMatch(shape, f1, precision, recall, placement);
    }

    private static List<(float X, float Y)> InkPixels(RgbImage image)
    {
        var points = new List<(float X, float Y)>();
        for (int y = 0; y < image.Height; y++)
        {
            for (int x = 0; x < image.Width; x++)
            {
                var (r, g, b) = image[x, y];
                if (IsInk(r, g, b))
                    points.Add((x + 0.5f, y + 0.5f));
            }
        }

        return points;
    }

    /// <summary>Pixels within <paramref name="radius"/> of an ink pixel.</summary>
    private static bool[] Dilate(RgbImage image, float radius)
    {
        int w = image.Width, h = image.Height, reach = (int)MathF.Ceiling(radius);
        var result = new bool[w * h];
        for (int y = 0; y < h; y++)
        {
            for (int x = 0; x < w; x++)
            {
                var (r, g, b) = image[x, y];
                if (!IsInk(r, g, b))
                    continue;
                for (int dy = -reach; dy <= reach; dy++)
                {
                    for (int dx = -reach; dx <= reach; dx++)
                    {
                        int nx = x + dx, ny = y + dy;
                        if (dx * dx + dy * dy <= radius * radius && nx >= 0 && ny >= 0 && nx < w && ny < h)
                            result[ny * w + nx] = true;
                    }
                }
            }
        }

        return result;
    }

    private static int Count(RgbImage image, Func<byte, byte, byte, bool> predicate)
    {
        int count = 0;
        var p = image.Pixels;
        for (int i = 0; i < p.Length; i += 3)
        {
            if (predicate(p[i], p[i + 1], p[i + 2]))
                count++;
        }

        return count;
    }
}
