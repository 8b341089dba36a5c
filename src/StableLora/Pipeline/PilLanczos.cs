namespace StableLora.Pipeline;

/// <summary>
/// PIL's <c>Image.resize(size, Image.LANCZOS)</c> of an 8-bit RGB image, which diffusers' <c>VaeImageProcessor</c> uses
/// to bring an init image to a multiple of the VAE factor. Re-stated from reading Pillow's libImaging/Resample.c:
/// a separable Lanczos-3 filter (sinc(x) sinc(x / 3), |x| &lt; 3) widened by the scale when shrinking; per output
/// pixel the double weights are normalised to sum 1 and rounded to 22-bit fixed point; each pass sums
/// pixel x weight in 32-bit integers from a rounding offset of half a unit and keeps the top bits, clipped to 0..255.
/// The horizontal pass comes first, then the vertical; a side whose size is unchanged is not resampled.
/// </summary>
internal static class PilLanczos
{
    private const int PrecisionBits = 32 - 8 - 2;
    private const double Support = 3.0;

    /// <summary>The resized pixels (row after row, R, G, B).</summary>
    public static byte[] Resize(byte[] pixels, int width, int height, int newWidth, int newHeight)
    {
        if (newWidth != width)
        {
            pixels = Pass(pixels, width, height, newWidth, horizontal: true);
            width = newWidth;
        }
        if (newHeight != height)
            pixels = Pass(pixels, width, height, newHeight, horizontal: false);
        return pixels;
    }

    private static byte[] Pass(byte[] source, int width, int height, int outSize, bool horizontal)
    {
        int inSize = horizontal ? width : height;
        var (starts, counts, weights, kernelSize) = Weights(inSize, outSize);
        int outWidth = horizontal ? outSize : width, outHeight = horizontal ? height : outSize;
        var result = new byte[outWidth * outHeight * 3];
        for (int y = 0; y < outHeight; y++)
        {
            for (int x = 0; x < outWidth; x++)
            {
                int o = horizontal ? x : y;
                int start = starts[o], count = counts[o];
                for (int c = 0; c < 3; c++)
                {
                    int sum = 1 << (PrecisionBits - 1);
                    for (int i = 0; i < count; i++)
                    {
                        int index = horizontal ? (y * width + start + i) * 3 + c : ((start + i) * width + x) * 3 + c;
                        sum += source[index] * weights[o * kernelSize + i];
                    }
                    result[(y * outWidth + x) * 3 + c] = (byte)Math.Clamp(sum >> PrecisionBits, 0, 255);
                }
            }
        }
        return result;
    }

    /// <summary>For every output position: the first input index, how many inputs, and their fixed-point weights.</summary>
    private static (int[] Starts, int[] Counts, int[] Weights, int KernelSize) Weights(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = Support * filterScale;
        int kernelSize = (int)Math.Ceiling(support) * 2 + 1;
        var starts = new int[outSize];
        var counts = new int[outSize];
        var weights = new int[outSize * kernelSize];
        var taps = new double[kernelSize];
        for (int o = 0; o < outSize; o++)
        {
            double center = (o + 0.5) * scale;
            double inverse = 1.0 / filterScale;
            int first = Math.Max((int)(center - support + 0.5), 0);
            int end = Math.Min((int)(center + support + 0.5), inSize);
            int count = end - first;
            double total = 0;
            for (int i = 0; i < count; i++)
            {
                taps[i] = Kernel((i + first - center + 0.5) * inverse);
                total += taps[i];
            }
            for (int i = 0; i < count; i++)
            {
                double w = total != 0.0 ? taps[i] / total : taps[i];
                double scaled = w * (1 << PrecisionBits);
                weights[o * kernelSize + i] = w < 0 ? (int)(scaled - 0.5) : (int)(scaled + 0.5);
            }
            starts[o] = first;
            counts[o] = count;
        }
        return (starts, counts, weights, kernelSize);
    }

    private static double Kernel(double x) => x >= -Support && x < Support ? Sinc(x) * Sinc(x / Support) : 0.0;

    private static double Sinc(double x)
    {
        if (x == 0.0)
            return 1.0;
        double angle = x * Math.PI;
        return Math.Sin(angle) / angle;
    }
}
