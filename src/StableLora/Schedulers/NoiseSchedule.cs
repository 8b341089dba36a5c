using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// The training noise schedule shared by all schedulers: betas and alphas_cumprod = cumprod(1 - betas), float32 on the
/// CPU, built with the same torch operations as diffusers (torch's float32 cumprod accumulates in double).
/// </summary>
internal sealed class NoiseSchedule : IDisposable
{
    private NoiseSchedule(torch.Tensor betas, torch.Tensor alphasCumprod)
    {
        Betas = betas;
        AlphasCumprod = alphasCumprod;
        AlphasCumprodValues = alphasCumprod.data<float>().ToArray();
        TrainingSigmas = AlphasCumprodValues.Select(a => MathF.Sqrt((1 - a) / a)).ToArray();
    }

    /// <summary>float32 [num_train_timesteps].</summary>
    public torch.Tensor Betas { get; }

    /// <summary>float32 [num_train_timesteps].</summary>
    public torch.Tensor AlphasCumprod { get; }

    /// <summary>The values of <see cref="AlphasCumprod"/>, for the per-step scalar arithmetic.</summary>
    public float[] AlphasCumprodValues { get; }

    /// <summary>
    /// The noise level of every training timestep, ((1 - acp) / acp) ** 0.5 in float32, ascending with t. Computed
    /// here rather than by libtorch, whose current tensor kernels round some of these differently from torch 1.13.
    /// </summary>
    public float[] TrainingSigmas { get; }

    public int Length => AlphasCumprodValues.Length;

    /// <param name="config">The scheduler config.</param>
    /// <param name="className">The reading class, for error messages.</param>
    /// <param name="allowSigmoid">Only DDPM knows the 'sigmoid' schedule.</param>
    /// <param name="rescaleZeroSnr">DDIM's <c>rescale_betas_zero_snr</c>.</param>
    public static NoiseSchedule Create(SchedulerConfig config, string className, bool allowSigmoid = false, bool rescaleZeroSnr = false)
    {
        using var scope = torch.NewDisposeScope();
        var betas = CreateBetas(config, className, allowSigmoid);
        if (rescaleZeroSnr)
            betas = RescaleZeroTerminalSnr(betas);
        var alphasCumprod = torch.cumprod(1.0 - betas, 0);
        return new NoiseSchedule(betas.DetachFromDisposeScope(), alphasCumprod.DetachFromDisposeScope());
    }

    public void Dispose()
    {
        Betas.Dispose();
        AlphasCumprod.Dispose();
    }

    private static torch.Tensor CreateBetas(SchedulerConfig config, string className, bool allowSigmoid)
    {
        int count = ConfigValues.NumTrainTimesteps(config);
        if (config.TrainedBetas is { } trained)
        {
            if (trained.Count != count)
                throw config.Unsupported("trained_betas", $"[{trained.Count} values]", $"expected num_train_timesteps = {count} values");
            return torch.tensor(trained.Select(b => (float)b).ToArray(), torch.float32);
        }

        double start = config.BetaStart ?? 0.0001;
        double end = config.BetaEnd ?? 0.02;
        switch (config.BetaSchedule ?? "linear")
        {
            case "linear":
                return torch.tensor(TorchLinspace.Float32(start, end, count));
            case "scaled_linear":
                return torch.tensor(TorchLinspace.Float32(Math.Sqrt(start), Math.Sqrt(end), count)).pow(2);
            case "squaredcos_cap_v2":
                return torch.tensor(CosineBetas(count), torch.float32);
            case "sigmoid" when allowSigmoid:
                return torch.tensor(TorchLinspace.Float32(-6, 6, count)).sigmoid() * (end - start) + start;
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

    /// <summary>diffusers' <c>rescale_zero_terminal_snr</c> (Lin et al. 2023), float32 torch operations as there.</summary>
    private static torch.Tensor RescaleZeroTerminalSnr(torch.Tensor betas)
    {
        var alphasBarSqrt = torch.cumprod(1.0 - betas, 0).sqrt();
        var first = alphasBarSqrt[0].clone();
        var last = alphasBarSqrt[-1].clone();
        alphasBarSqrt = (alphasBarSqrt - last) * (first / (first - last));
        var alphasBar = alphasBarSqrt.pow(2);
        var alphas = torch.cat([alphasBar[..1], alphasBar[1..] / alphasBar[..^1]]);
        return 1 - alphas;
    }
}
