namespace StableLora.Schedulers;

/// <summary>
/// float32 <c>torch.linspace</c> as torch 1.13 computes it on an x86-64 CPU with AVX2 (the build the reference values
/// come from); current libtorch uses a scalar loop instead, whose values differ in the last bit for about a quarter of
/// the betas, which moves alphas_cumprod by up to a few 1e-8. Torch 1.13 fills blocks of 8 lanes from a base
/// start + step * i (or end - step * (n - 1 - i) past the halfway point) as base + k * step, two blocks per iteration,
/// and the tail element by element; the AVX2 build contracts every multiply-add into an FMA.
/// </summary>
internal static class TorchLinspace
{
    private const int Lanes = 8;

    public static float[] Float32(double start, double end, int steps)
    {
        var values = new float[steps];
        if (steps == 0)
            return values;
        float first = (float)start, last = (float)end;
        if (steps == 1)
        {
            values[0] = first;
            return values;
        }

        float step = (last - first) / (steps - 1);
        int halfway = steps / 2;
        float Element(long i) => i < halfway
            ? MathF.FusedMultiplyAdd(step, i, first)
            : MathF.FusedMultiplyAdd(-step, steps - i - 1, last);

        int index = 0;
        for (; index <= steps - 2 * Lanes; index += 2 * Lanes)
        {
            for (int block = index; block < index + 2 * Lanes; block += Lanes)
            {
                float lane0 = Element(block);
                for (int k = 0; k < Lanes; k++)
                    values[block + k] = MathF.FusedMultiplyAdd(k, step, lane0);
            }
        }
        for (; index < steps; index++)
            values[index] = Element(index);
        return values;
    }
}
