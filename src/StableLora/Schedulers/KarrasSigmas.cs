namespace StableLora.Schedulers;

/// <summary>
/// The noise levels of Karras et al. (2022), rho = 7, and diffusers' mapping of a sigma back to a fractional training
/// timestep, in diffusers' NumPy arithmetic.
/// </summary>
internal static class KarrasSigmas
{
    private const double Rho = 7.0;

    /// <summary>
    /// (first^(1/rho) + ramp * (last^(1/rho) - first^(1/rho)))^rho for ramp = linspace(0, 1, count): from
    /// <paramref name="first"/> to <paramref name="last"/> (diffusers calls them sigma_max and sigma_min, but DPM-Solver
    /// passes them in ascending order).
    /// </summary>
    public static double[] Ramp(double first, double last, int count)
    {
        double firstInvRho = Math.Pow(first, 1 / Rho);
        double lastInvRho = Math.Pow(last, 1 / Rho);
        return NumpyMath.Linspace(0, 1, count).Select(r => Math.Pow(firstInvRho + r * (lastInvRho - firstInvRho), Rho)).ToArray();
    }

    /// <summary>np.log of the float32 training sigmas, itself float32, with NumPy's own float32 log.</summary>
    public static float[] LogSigmas(float[] trainingSigmas) => trainingSigmas.Select(NumpyMath.LogFloat32).ToArray();

    /// <summary>
    /// diffusers' <c>_sigma_to_t</c>: the training timestep whose log sigma is <paramref name="sigma"/>'s, interpolated
    /// linearly in log sigma between the two neighbouring entries of the table, and clamped to the table's range.
    /// NumPy 1.x value-based casting makes the float64 scalar log(sigma) float32 wherever it meets the float32 table,
    /// so the weight is float32 arithmetic; only the final blend of the two indices is float64.
    /// </summary>
    public static double SigmaToTimestep(double sigma, float[] logSigmas)
    {
        float logSigma = (float)Math.Log(sigma);
        int low = 0;
        for (int i = 0; i < logSigmas.Length; i++)
        {
            if (logSigma - logSigmas[i] >= 0)
                low = i;
        }
        low = Math.Min(low, logSigmas.Length - 2);
        int high = low + 1;
        float w = (logSigmas[low] - logSigma) / (logSigmas[low] - logSigmas[high]);
        w = Math.Clamp(w, 0f, 1f);
        return (double)(1 - w) * low + (double)w * high;
    }
}
