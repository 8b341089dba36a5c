using StableLora.Layers;
using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// The training noise schedule shared by all schedulers: betas, alphas_cumprod = cumprod(1 - betas) and the training
/// sigmas, as float32 values computed with the arithmetic of diffusers on torch 1.13 (the reference): float32
/// elementwise operations, a cumulative product accumulated in double (torch's CPU cumprod does), and torch 1.13's
/// linspace. Plain IEEE float32 arithmetic here is deliberate: current libtorch kernels round some of these values
/// differently from torch 1.13, which moves every later step.
/// </summary>
internal sealed class NoiseSchedule
{
    private NoiseSchedule(float[] betas)
    {
        Betas = betas;
        AlphasCumprod = CumulativeProduct(betas.Select(b => 1 - b));
        TrainingSigmas = AlphasCumprod.Select(a => MathF.Sqrt((1 - a) / a)).ToArray();
    }

    public float[] Betas { get; }

    public float[] AlphasCumprod { get; }

    /// <summary>The noise level of every training timestep, ((1 - acp) / acp) ** 0.5, ascending with t.</summary>
    public float[] TrainingSigmas { get; }

    /// <param name="config">The scheduler config.</param>
    /// <param name="className">The reading class, for error messages.</param>
    /// <param name="allowSigmoid">Only DDPM knows the 'sigmoid' schedule.</param>
    /// <param name="rescaleZeroSnr">DDIM's <c>rescale_betas_zero_snr</c>.</param>
    public static NoiseSchedule Create(SchedulerConfig config, string className, bool allowSigmoid = false, bool rescaleZeroSnr = false)
    {
        var betas = CreateBetas(config, className, allowSigmoid);
        return new NoiseSchedule(rescaleZeroSnr ? RescaleZeroTerminalSnr(betas) : betas);
    }

    private static float[] CreateBetas(SchedulerConfig config, string className, bool allowSigmoid)
    {
        int count = ConfigValues.NumTrainTimesteps(config);
        if (config.TrainedBetas is { } trained)
        {
            if (trained.Count != count)
                throw config.Unsupported("trained_betas", $"[{trained.Count} values]", $"expected num_train_timesteps = {count} values");
            return trained.Select(b => (float)b).ToArray();
        }

        double start = config.BetaStart ?? 0.0001;
        double end = config.BetaEnd ?? 0.02;
        switch (config.BetaSchedule ?? "linear")
        {
            case "linear":
                return TorchLinspace.Float32(start, end, count);
            case "scaled_linear":
                return TorchLinspace.Float32(Math.Sqrt(start), Math.Sqrt(end), count).Select(b => b * b).ToArray();
            case "squaredcos_cap_v2":
                return CosineBetas(count);
            case "sigmoid" when allowSigmoid:
                return SigmoidBetas(start, end, count);
            case var other:
                string supported = allowSigmoid ? "'linear', 'scaled_linear', 'squaredcos_cap_v2' or 'sigmoid'" : "'linear', 'scaled_linear' or 'squaredcos_cap_v2'";
                throw config.Unsupported("beta_schedule", other, $"{className} supports {supported}");
        }
    }

    /// <summary>diffusers' <c>betas_for_alpha_bar</c> with the cosine alpha_bar of Nichol and Dhariwal, in float64.</summary>
    private static float[] CosineBetas(int count)
    {
        static double AlphaBar(double t)
        {
            double c = Math.Cos((t + 0.008) / 1.008 * Math.PI / 2);
            return c * c;
        }

        var betas = new float[count];
        for (int i = 0; i < count; i++)
        {
            double t1 = i / (double)count;
            double t2 = (i + 1) / (double)count;
            betas[i] = (float)Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), 0.999);
        }
        return betas;
    }

    /// <summary>DDPM's sigmoid(linspace(-6, 6)) * (end - start) + start; the sigmoid is libtorch's.</summary>
    private static float[] SigmoidBetas(double start, double end, int count)
    {
        using var scope = torch.NewDisposeScope();
        using var sigmoid = torch.tensor(TorchLinspace.Float32(-6, 6, count)).sigmoid();
        using var scaled = sigmoid.Times(end - start);
        var betas = scaled.Plus(start);
        return betas.data<float>().ToArray();
    }

    /// <summary>diffusers' <c>rescale_zero_terminal_snr</c> (Lin et al. 2023): shift and scale sqrt(acp) so that it ends at 0.</summary>
    private static float[] RescaleZeroTerminalSnr(float[] betas)
    {
        float[] sqrtAlphaBar = CumulativeProduct(betas.Select(b => 1 - b)).Select(MathF.Sqrt).ToArray();
        float first = sqrtAlphaBar[0], last = sqrtAlphaBar[^1];
        float scale = first / (first - last);
        float[] alphaBar = sqrtAlphaBar.Select(s => (s - last) * scale).Select(s => s * s).ToArray();
        var rescaled = new float[betas.Length];
        rescaled[0] = 1 - alphaBar[0];
        for (int i = 1; i < rescaled.Length; i++)
            rescaled[i] = 1 - alphaBar[i] / alphaBar[i - 1];
        return rescaled;
    }

    private static float[] CumulativeProduct(IEnumerable<float> values)
    {
        double product = 1;
        return values.Select(v => (float)(product *= v)).ToArray();
    }
}
