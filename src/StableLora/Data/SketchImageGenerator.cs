using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace StableLora.Data;

/// <summary>
/// Draws a deterministic set of simple "sketches" (dark strokes, outlined circles, rectangles and zig-zags on paper
/// white) for trying StableLora without a dataset: the embedded demo and the tests train on them.
/// </summary>
public static class SketchImageGenerator
{
    /// <summary>Writes <paramref name="count"/> PNG sketches (<c>sketch-000.png</c>, ...) of <paramref name="size"/> pixels into <paramref name="directory"/>.</summary>
    /// <param name="directory">The folder (created if missing).</param>
    /// <param name="count">How many images.</param>
    /// <param name="size">The side of each square image in pixels.</param>
    /// <param name="seed">The same seed gives the same images.</param>
    /// <returns>The files written, in order.</returns>
    public static IReadOnlyList<string> Generate(string directory, int count, int size, int seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 8);
        Directory.CreateDirectory(directory);
        var files = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            using var image = Draw(size, new Random(seed * 7919 + i));
            string path = Path.Combine(directory, $"sketch-{i:D3}.png");
            image.SaveAsPng(path);
            files.Add(path);
        }

        return files;
    }

    /// <summary>One sketch.</summary>
    /// <param name="size">The side in pixels.</param>
    /// <param name="random">The source of the composition.</param>
    public static Image<Rgb24> Draw(int size, Random random)
    {
        var canvas = new Canvas(size, random.Next(232, 250));
        var ink = (byte)random.Next(10, 70);
        float width = Math.Max(1f, size / 48f);
        int shapes = random.Next(2, 5);
        for (int s = 0; s < shapes; s++)
        {
            float cx = Next(random, 0.2f, 0.8f) * size, cy = Next(random, 0.2f, 0.8f) * size;
            float extent = Next(random, 0.12f, 0.3f) * size;
            switch (random.Next(4))
            {
                case 0:
                    canvas.Circle(cx, cy, extent, width, ink);
                    break;
                case 1:
                    canvas.Line(cx - extent, cy - extent, cx + extent, cy - extent, width, ink);
                    canvas.Line(cx + extent, cy - extent, cx + extent, cy + extent, width, ink);
                    canvas.Line(cx + extent, cy + extent, cx - extent, cy + extent, width, ink);
                    canvas.Line(cx - extent, cy + extent, cx - extent, cy - extent, width, ink);
                    break;
                case 2:
                    float x = cx - extent;
                    for (int k = 0; k < 4; k++, x += extent / 2)
                        canvas.Line(x, cy + (k % 2 == 0 ? -extent : extent) / 2, x + extent / 2, cy + (k % 2 == 0 ? extent : -extent) / 2, width, ink);
                    break;
                default:
                    canvas.Line(cx - extent, cy + Next(random, -1, 1) * extent, cx + extent, cy + Next(random, -1, 1) * extent, width * 1.5f, ink);
                    break;
            }
        }

        return canvas.Image;
    }

    private static float Next(Random random, float low, float high) => low + (float)random.NextDouble() * (high - low);

    /// <summary>Grayscale drawing with anti-aliased strokes (distance to the stroke, feathered over one pixel).</summary>
    private sealed class Canvas
    {
        public Canvas(int size, int paper)
        {
            Image = new Image<Rgb24>(size, size, new Rgb24((byte)paper, (byte)paper, (byte)(paper - 6)));
        }

        public Image<Rgb24> Image { get; }

        public void Line(float x0, float y0, float x1, float y1, float width, byte ink) =>
            Stroke(x => PlaneGeometry.DistanceToSegment(x.X, x.Y, x0, y0, x1, y1), Math.Min(x0, x1) - width, Math.Min(y0, y1) - width, Math.Max(x0, x1) + width, Math.Max(y0, y1) + width, width, ink);

        public void Circle(float cx, float cy, float radius, float width, byte ink) =>
            Stroke(p => Math.Abs(MathF.Sqrt((p.X - cx) * (p.X - cx) + (p.Y - cy) * (p.Y - cy)) - radius), cx - radius - width, cy - radius - width, cx + radius + width, cy + radius + width, width, ink);

        private void Stroke(Func<(float X, float Y), float> distance, float left, float top, float right, float bottom, float width, byte ink)
        {
            int x0 = Math.Max(0, (int)left - 1), y0 = Math.Max(0, (int)top - 1);
            int x1 = Math.Min(Image.Width - 1, (int)right + 1), y1 = Math.Min(Image.Height - 1, (int)bottom + 1);
            for (int y = y0; y <= y1; y++)
            {
                for (int x = x0; x <= x1; x++)
                {
                    float coverage = Math.Clamp(width / 2 + 0.5f - distance((x + 0.5f, y + 0.5f)), 0f, 1f);
                    if (coverage <= 0)
                        continue;
                    var pixel = Image[x, y];
                    byte Mix(byte paper) => (byte)(paper + (ink - paper) * coverage);
                    Image[x, y] = new Rgb24(Mix(pixel.R), Mix(pixel.G), Mix(pixel.B));
                }
            }
        }
    }
}
