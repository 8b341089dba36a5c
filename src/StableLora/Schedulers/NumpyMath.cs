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

    /// <summary>
    /// <c>np.log</c> of a float32 value as NumPy 1.24 computes it on every x86-64 CPU with AVX2 and FMA (its
    /// <c>simd_log_FLOAT</c>, also used for AVX512F): the mantissa m in [sqrt(1/2), sqrt(2)), a (5, 5) rational
    /// approximation of log(1 + (m - 1)) evaluated with fused multiply-adds, plus exponent * ln 2. It is not correctly
    /// rounded (up to 3.8 ulp; 190 of the 1000 SD training log sigmas differ from the correctly rounded log by 1 or 2
    /// ulp), and diffusers' Karras timesteps divide by differences of neighbouring log sigmas, which magnifies such
    /// differences to about 1e-5 of a timestep.
    /// </summary>
    public static float LogFloat32(float x)
    {
        if (float.IsNaN(x))
            return float.NaN;
        if (x < 0)
            return -float.NaN;
        if (x == 0)
            return float.NegativeInfinity;
        if (float.IsPositiveInfinity(x))
            return float.PositiveInfinity;

        float exponentBias = 0;
        if (x < 1.17549435E-38f) // FLT_MIN
        {
            x *= BitConverter.Int32BitsToSingle(0x71800000); // 2^100
            exponentBias = 100;
        }
        int bits = BitConverter.SingleToInt32Bits(x);
        float exponent = ((int)((uint)bits >> 23) - 0x7E) - exponentBias;
        float m = BitConverter.Int32BitsToSingle((bits & 0x7FFFFF) | (126 << 23));
        if (m <= 0.707106781186547524400844362104849039f)
        {
            m += m;
            exponent -= 1;
        }
        m -= 1;

        float numerator = MathF.FusedMultiplyAdd(2.589979117907922693523e-02f, m, 3.808837741388407920751e-01f);
        numerator = MathF.FusedMultiplyAdd(numerator, m, 1.480000633576506585156e+00f);
        numerator = MathF.FusedMultiplyAdd(numerator, m, 2.112677543073053063722e+00f);
        numerator = MathF.FusedMultiplyAdd(numerator, m, 9.999999999999998702752e-01f);
        numerator = MathF.FusedMultiplyAdd(numerator, m, 0f);
        float denominator = MathF.FusedMultiplyAdd(5.875095403124574342950e-03f, m, 1.546476374983906719538e-01f);
        denominator = MathF.FusedMultiplyAdd(denominator, m, 9.864942958519418960339e-01f);
        denominator = MathF.FusedMultiplyAdd(denominator, m, 2.453006071784736363091e+00f);
        denominator = MathF.FusedMultiplyAdd(denominator, m, 2.612677543073109236779e+00f);
        denominator = MathF.FusedMultiplyAdd(denominator, m, 1f);
        return MathF.FusedMultiplyAdd(exponent, 0.693147180559945309417232121458176568f, numerator / denominator);
    }
}
