using StableLora.Data;

namespace StableLora.Demo;

/// <summary>The demo's shapes: the four the base demo model draws, and the diamond its demo LoRA teaches.</summary>
internal enum Shape
{
    Circle,
    Square,
    Triangle,
    Star,

    /// <summary>A square standing on a corner (turned 45 degrees); the base model never saw one, nor the word.</summary>
    Diamond,
}

/// <summary>Where a shape sits on the canvas: its centre and radius (the circumscribed circle) in pixels.</summary>
internal readonly record struct ShapePlacement(float CenterX, float CenterY, float Radius);

/// <summary>
/// The demo's procedural dataset: one outlined shape (circle, square, triangle or star) in ink on paper white, near
/// the centre of a square canvas, captioned "a sketch of a circle" and so on. The base demo model is trained on those
/// four; the demo LoRA teaches a fifth, "a sketch of a diamond". Everything is a pure function of the seed, the index
/// and the size.
/// </summary>
internal static class ShapeSketches
{
    /// <summary>The shapes the base demo model was trained on, in the order its dataset takes them.</summary>
    public static readonly IReadOnlyList<Shape> BaseShapes = [Shape.Circle, Shape.Square, Shape.Triangle, Shape.Star];

    /// <summary>Every shape, the templates <see cref="ShapeScores.Recognize"/> matches against.</summary>
    public static readonly IReadOnlyList<Shape> AllShapes = Enum.GetValues<Shape>();

    /// <summary>The shape the demo LoRA teaches.</summary>
    public const Shape LoraShape = Shape.Diamond;

    public static readonly (byte R, byte G, byte B) BlackInk = (20, 20, 24);

    /// <summary>The stroke width on a 64-pixel canvas; it scales with the canvas.</summary>
    private const float StrokeWidthAt64 = 3.5f;

    public static string Caption(Shape shape) => $"a sketch of a {shape.ToString().ToLowerInvariant()}";

    /// <summary>The shape of the <paramref name="index"/>-th base image (the base shapes take turns, so any run of four has each once).</summary>
    public static Shape ShapeOf(int index) => BaseShapes[index % BaseShapes.Count];

    /// <summary>The placement of the <paramref name="index"/>-th image: centre within ±8% of the middle, radius 25% to 34% of the side.</summary>
    public static ShapePlacement PlacementOf(int index, int size, int seed)
    {
        var random = new Random(unchecked(seed * 100_003 + index));
        float Next(float low, float high) => low + (float)random.NextDouble() * (high - low);
        return new ShapePlacement(size * (0.5f + Next(-0.08f, 0.08f)), size * (0.5f + Next(-0.08f, 0.08f)), size * Next(0.25f, 0.34f));
    }

    public static float StrokeWidth(int size) => StrokeWidthAt64 * size / 64f;

    /// <summary>The <paramref name="index"/>-th image of the dataset as 8-bit RGB bytes (row after row).</summary>
    public static RgbImage Draw(int index, int size, int seed, (byte R, byte G, byte B) ink) =>
        Draw(ShapeOf(index), PlacementOf(index, size, seed), size, ink);

    public static RgbImage Draw(Shape shape, ShapePlacement placement, int size, (byte R, byte G, byte B) ink)
    {
        const byte paper = 248;
        var pixels = new byte[size * size * 3];
        Array.Fill(pixels, paper);
        var outline = Outline(shape, placement);
        float halfWidth = StrokeWidth(size) / 2;
        for (int y = 0; y < size; y++)
        {
            for (int x = 0; x < size; x++)
            {
                float coverage = Math.Clamp(halfWidth + 0.5f - outline.Distance(x + 0.5f, y + 0.5f), 0f, 1f);
                if (coverage <= 0)
                    continue;
                int offset = (y * size + x) * 3;
                pixels[offset] = (byte)MathF.Round(paper + (ink.R - paper) * coverage);
                pixels[offset + 1] = (byte)MathF.Round(paper + (ink.G - paper) * coverage);
                pixels[offset + 2] = (byte)MathF.Round(paper + (ink.B - paper) * coverage);
            }
        }

        return new RgbImage(size, size, pixels);
    }

    /// <summary>
    /// Writes <paramref name="count"/> black-ink sketches as PNGs with same-named caption files: all of
    /// <paramref name="shape"/>, or the base shapes taking turns when it is null. Returns the image paths.
    /// </summary>
    public static IReadOnlyList<string> WriteDataset(string directory, int count, int size, int seed, Shape? shape = null)
    {
        Directory.CreateDirectory(directory);
        var files = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            var drawn = shape ?? ShapeOf(i);
            string path = Path.Combine(directory, $"{drawn.ToString().ToLowerInvariant()}-{i:D3}.png");
            using (var image = Draw(drawn, PlacementOf(i, size, seed), size, BlackInk).ToImageSharp())
                SixLabors.ImageSharp.ImageExtensions.SaveAsPng(image, path);
            File.WriteAllText(Path.ChangeExtension(path, ".txt"), Caption(drawn));
            files.Add(path);
        }

        return files;
    }

    /// <summary>The shape's outline as line segments (a circle has none: its distance is analytic).</summary>
    public static ShapeOutline Outline(Shape shape, ShapePlacement placement)
    {
        var (cx, cy, r) = placement;
        (float X, float Y) Polar(float radius, double degrees) =>
            (cx + radius * (float)Math.Cos(degrees * Math.PI / 180), cy + radius * (float)Math.Sin(degrees * Math.PI / 180));
        var corners = shape switch
        {
            Shape.Circle => [],
            Shape.Square => Enumerable.Range(0, 4).Select(k => Polar(r, 45 + 90 * k)).ToArray(),
            Shape.Diamond => Enumerable.Range(0, 4).Select(k => Polar(r, 90 * k)).ToArray(),
            Shape.Triangle => Enumerable.Range(0, 3).Select(k => Polar(r, -90 + 120 * k)).ToArray(),
            Shape.Star => Enumerable.Range(0, 10).Select(k => Polar(k % 2 == 0 ? r : r * 0.45f, -90 + 36 * k)).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(shape)),
        };
        return new ShapeOutline(shape == Shape.Circle ? placement : null, corners);
    }
}

/// <summary>A closed outline: a circle, or a polygon through <paramref name="Corners"/>.</summary>
internal sealed record ShapeOutline(ShapePlacement? Circle, (float X, float Y)[] Corners)
{
    /// <summary>The distance from a point to the outline, in pixels.</summary>
    public float Distance(float x, float y)
    {
        if (Circle is { } c)
            return MathF.Abs(MathF.Sqrt((x - c.CenterX) * (x - c.CenterX) + (y - c.CenterY) * (y - c.CenterY)) - c.Radius);
        float best = float.MaxValue;
        for (int i = 0; i < Corners.Length; i++)
        {
            var (x0, y0) = Corners[i];
            var (x1, y1) = Corners[(i + 1) % Corners.Length];
            best = MathF.Min(best, PlaneGeometry.DistanceToSegment(x, y, x0, y0, x1, y1));
        }

        return best;
    }

    /// <summary>Evenly spaced points along the outline (about one per pixel of length).</summary>
    public IReadOnlyList<(float X, float Y)> SamplePoints()
    {
        var points = new List<(float X, float Y)>();
        if (Circle is { } c)
        {
            int n = Math.Max(8, (int)(2 * MathF.PI * c.Radius));
            for (int k = 0; k < n; k++)
                points.Add((c.CenterX + c.Radius * MathF.Cos(2 * MathF.PI * k / n), c.CenterY + c.Radius * MathF.Sin(2 * MathF.PI * k / n)));
            return points;
        }

        for (int i = 0; i < Corners.Length; i++)
        {
            var (x0, y0) = Corners[i];
            var (x1, y1) = Corners[(i + 1) % Corners.Length];
            int n = Math.Max(1, (int)MathF.Ceiling(MathF.Sqrt((x1 - x0) * (x1 - x0) + (y1 - y0) * (y1 - y0))));
            for (int k = 0; k < n; k++)
                points.Add((x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n));
        }

        return points;
    }
}
