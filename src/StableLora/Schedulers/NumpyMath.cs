namespace StableLora.Schedulers;

/// <summary>
/// The float64 arithmetic of the NumPy 1.24 functions diffusers uses to lay out timesteps and sigmas, reproduced
/// operation by operation so that the results agree to the last bit (timesteps are rounded and truncated from these).
/// </summary>
internal static class NumpyMath
{
    /// <summary><c>np.linspace(start, stop, num)</c>: <c>i * step + start</c> with step = (stop - start) / (num - 1), the last value exactly stop.</summary>
    public static double[] Linspace(double start, double stop, int num)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(num);
        var values = new double[num];
        int div = num - 1;
        double delta = stop - start;
        if (div > 0)
        {
            double step = delta / div;
            for (int i = 0; i < num; i++)
                values[i] = step == 0 ? i / (double)div * delta + start : i * step + start;
            values[num - 1] = stop;
        }
        else if (num == 1)
        {
            values[0] = 0 * delta + start;
        }
        return values;
    }

    /// <summary><c>np.arange(start, stop, step)</c> for floats: length ceil((stop - start) / step), values start + i * (second - start).</summary>
    public static double[] Arange(double start, double stop, double step)
    {
        double length = Math.Ceiling((stop - start) / step);
        if (!(length > 0))
            return [];
        var values = new double[(int)length];
        values[0] = start;
        if (values.Length > 1)
        {
            double delta = (start + step) - start;
            values[1] = start + step;
            for (int i = 2; i < values.Length; i++)
                values[i] = start + i * delta;
        }
        return values;
    }

    /// <summary><c>np.round</c> / <c>np.rint</c>: round half to even.</summary>
    public static double Round(double value) => Math.Round(value, MidpointRounding.ToEven);

    /// <summary><c>np.interp(x, arange(len(fp)), fp)</c>: linear interpolation over the integer grid 0..len(fp)-1, clamped at the ends.</summary>
    public static double InterpOverIndex(double x, IReadOnlyList<double> fp)
    {
        int last = fp.Count - 1;
        if (double.IsNaN(x))
            return x;
        if (x <= 0)
            return fp[0];
        if (x >= last)
            return fp[last];
        int j = (int)Math.Floor(x);
        if (j == x)
            return fp[j];
        double slope = (fp[j + 1] - fp[j]) / ((j + 1.0) - j);
        return slope * (x - j) + fp[j];
    }
}
