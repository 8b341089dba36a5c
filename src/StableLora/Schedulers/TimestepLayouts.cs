namespace StableLora.Schedulers;

/// <summary>
/// The <c>set_timesteps</c> layouts of the diffusers classes. Each family computes them slightly differently (rounding,
/// order, dtype, DPM-Solver's extra point), and the differences are kept here side by side.
/// </summary>
internal static class TimestepLayouts
{
    /// <summary>DDPM and DDIM: descending integer timesteps.</summary>
    public static long[] DdimFamily(TimestepSpacing spacing, int trainSteps, int count, int stepsOffset) => spacing switch
    {
        TimestepSpacing.Linspace => NumpyMath.Linspace(0, trainSteps - 1, count).Select(t => (long)NumpyMath.Round(t)).Reverse().ToArray(),
        TimestepSpacing.Leading => Enumerable.Range(0, count).Reverse().Select(i => (long)i * (trainSteps / count) + stepsOffset).ToArray(),
        _ => Trailing(trainSteps, (double)trainSteps / count),
    };

    /// <summary>PNDM's <c>_timesteps</c>: the same points in ascending order (PNDM then builds its PRK/PLMS sequence from them).</summary>
    public static long[] PndmAscending(TimestepSpacing spacing, int trainSteps, int count, int stepsOffset) => spacing switch
    {
        TimestepSpacing.Linspace => NumpyMath.Linspace(0, trainSteps - 1, count).Select(t => (long)NumpyMath.Round(t)).ToArray(),
        TimestepSpacing.Leading => Enumerable.Range(0, count).Select(i => (long)i * (trainSteps / count) + stepsOffset).ToArray(),
        _ => Enumerable.Reverse(Trailing(trainSteps, (double)trainSteps / count)).ToArray(),
    };

    /// <summary>Euler and Euler ancestral: descending float32 timesteps ('linspace' is not rounded).</summary>
    public static float[] EulerFamily(TimestepSpacing spacing, int trainSteps, int count, int stepsOffset) => spacing switch
    {
        TimestepSpacing.Linspace => NumpyMath.Linspace(0, trainSteps - 1, count).Select(t => (float)t).Reverse().ToArray(),
        TimestepSpacing.Leading => Enumerable.Range(0, count).Reverse().Select(i => (float)((long)i * (trainSteps / count)) + stepsOffset).ToArray(),
        _ => NumpyMath.Arange(trainSteps, 0, -((double)trainSteps / count)).Select(t => (float)NumpyMath.Round(t) - 1f).ToArray(),
    };

    /// <summary>
    /// DPM-Solver: count + 1 points ending at 0 (linspace/leading) of which the final one is dropped, below
    /// <paramref name="lastTimestep"/> (num_train_timesteps unless lambda_min_clipped cuts the range).
    /// </summary>
    public static long[] DpmSolver(TimestepSpacing spacing, int trainSteps, int lastTimestep, int count, int stepsOffset) => spacing switch
    {
        TimestepSpacing.Linspace => NumpyMath.Linspace(0, lastTimestep - 1, count + 1).Select(t => (long)NumpyMath.Round(t)).Reverse().Take(count).ToArray(),
        TimestepSpacing.Leading => Enumerable.Range(0, count + 1).Reverse().Take(count).Select(i => (long)i * (lastTimestep / (count + 1)) + stepsOffset).ToArray(),
        _ => Trailing(lastTimestep, (double)trainSteps / count),
    };

    /// <summary><c>round(arange(start, 0, -ratio)) - 1</c>, descending.</summary>
    private static long[] Trailing(int start, double ratio) =>
        NumpyMath.Arange(start, 0, -ratio).Select(t => (long)NumpyMath.Round(t) - 1).ToArray();
}
