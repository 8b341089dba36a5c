using System.Text.Json;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.Schedulers;
using StableLora.Training;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// sd-scripts' loss settings (loss types, Huber schedules, min-SNR, v-prediction-like loss, debiased estimation, zero
/// terminal SNR, input perturbation noise) against sd-scripts' own functions run on fixed tensors
/// (Fixtures/losses/losses.json, made by tools/generate_loss_fixtures.py).
/// </summary>
public sealed class LossSettingsTests
{
    /// <summary>float32 rounding: libtorch's kernels here are newer than the reference's torch 1.13 and may round or reduce differently.</summary>
    private static readonly Tolerance Float32 = new(1e-7, 2e-6);

    /// <summary>
    /// The Huber losses subtract c from sqrt(d² + c²) (up to about 4 here), so one float32 ulp of that root (4.8e-7; libtorch's
    /// vectorised sqrt here is not always correctly rounded, torch 1.13's was) is an absolute error of up to 2c ulp in a
    /// result that may be small: an absolute bound of a few ulps of the root.
    /// </summary>
    private static readonly Tolerance HuberRoot = new(1e-6, 2e-6);

    private static readonly Lazy<JsonDocument> Fixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(FixturePaths.Root, "losses", "losses.json"))));

    private static JsonElement Root => Fixture.Value.RootElement;

    public static IEnumerable<object[]> Cases() => Enumerable.Range(0, Root.GetProperty("cases").GetArrayLength()).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Cases))]
    public void EachSettingEqualsSdScriptsOnFixedTensors(int index)
    {
        using var scope = NewDisposeScope();
        var c = Root.GetProperty("cases")[index];
        var s = c.GetProperty("settings");
        string label = s.GetRawText();
        bool velocity = Bool(s, "v_parameterization");
        bool zeroTerminalSnr = Bool(s, "zero_terminal_snr");
        var settings = new LossSettings(
            s.TryGetProperty("loss_type", out var type) ? Enum.GetValues<LossType>().Single(t => LossSettings.Name(t) == type.GetString()) : LossType.L2,
            s.TryGetProperty("huber_c", out var huberC) ? huberC.GetDouble() : LossSettings.DefaultHuberC,
            s.TryGetProperty("huber_schedule", out var schedule) ? Enum.GetValues<HuberSchedule>().Single(h => LossSettings.Name(h) == schedule.GetString()) : HuberSchedule.Snr,
            Bool(s, "debiased_estimation_loss"),
            s.TryGetProperty("v_pred_like_loss", out var vPredLike) ? vPredLike.GetDouble() : null);
        double? minSnrGamma = s.TryGetProperty("min_snr_gamma", out var gamma) ? gamma.GetDouble() : null;
        var prediction = velocity ? PredictionKind.Velocity : PredictionKind.Epsilon;

        using var scheduler = new DdpmScheduler(SchedulerFixture.Sd15Config(), zeroTerminalSnr);
        using var unscaled = new DdpmScheduler(SchedulerFixture.Sd15Config());
        var predicted = Tensor(Root, "model_pred", "shape");
        var target = Tensor(Root, "target", "shape");
        var timesteps = tensor(Root.GetProperty("timesteps").EnumerateArray().Select(t => t.GetInt64()).ToArray());

        Tensor? threshold = null;
        if (settings.Type is LossType.Huber or LossType.SmoothL1)
        {
            threshold = LossFunctions.HuberThreshold(settings.HuberSchedule, settings.HuberC, timesteps, scheduler.AlphasCumprod, scheduler.TrainTimesteps);
            TensorAssert.Close(Values(c.GetProperty("huber_c")), threshold, Float32, $"{label} huber_c");
        }
        else
        {
            Assert.Equal(JsonValueKind.Null, c.GetProperty("huber_c").ValueKind);
        }

        var elementwise = LossFunctions.Elementwise(predicted, target, settings.Type, threshold);
        var elementwiseTolerance = threshold is null ? Float32 : HuberRoot;
        TensorAssert.Close(Values(c.GetProperty("elementwise")).reshape(predicted.shape), elementwise, elementwiseTolerance, $"{label} elementwise");
        var perSample = LossFunctions.PerSample(predicted, target, timesteps, scheduler, unscaled.AlphasCumprod, prediction, minSnrGamma, settings);
        TensorAssert.Close(Values(c.GetProperty("per_sample")), perSample, Float32, $"{label} per sample");
        var loss = LossFunctions.Compute(predicted, target, timesteps, scheduler, unscaled.AlphasCumprod, prediction, minSnrGamma, settings);
        TensorAssert.Close(tensor(new[] { (float)c.GetProperty("loss").GetDouble() }), loss.reshape(1), Float32, $"{label} loss");
    }

    [Fact]
    public void TheSeedsMseAndMinSnrPathsAreTheGeneralPathWithDefaultSettings()
    {
        using var scope = NewDisposeScope();
        using var scheduler = new DdpmScheduler(SchedulerFixture.Sd15Config());
        var predicted = Tensor(Root, "model_pred", "shape");
        var target = Tensor(Root, "target", "shape");
        var timesteps = tensor(Root.GetProperty("timesteps").EnumerateArray().Select(t => t.GetInt64()).ToArray());
        foreach (var prediction in new[] { PredictionKind.Epsilon, PredictionKind.Velocity })
        {
            foreach (double? gamma in new double?[] { null, 5.0 })
            {
                var seed = LossFunctions.Mse(predicted, target, timesteps, scheduler, prediction, gamma);
                var general = LossFunctions.Compute(predicted, target, timesteps, scheduler, scheduler.AlphasCumprod, prediction, gamma, LossSettings.Default);
                TensorAssert.Close(seed.reshape(1), general.reshape(1), Float32, $"{prediction} gamma {gamma}");
            }
        }
    }

    [Fact]
    public void ZeroTerminalSnrRescalesTheBetasAsSdScriptsAndLeavesTheSnrWeightsOnTheOriginalSchedule()
    {
        using var plain = new DdpmScheduler(SchedulerFixture.Sd15Config());
        using var rescaled = new DdpmScheduler(SchedulerFixture.Sd15Config(), zeroTerminalSnr: true);
        TensorAssert.Close(Values(Root.GetProperty("alphas_cumprod")), plain.AlphasCumprod, new Tolerance(0, 0), "alphas_cumprod");
        TensorAssert.Close(Values(Root.GetProperty("alphas_cumprod_zero_terminal_snr")), rescaled.AlphasCumprod, new Tolerance(0, 0), "alphas_cumprod with zero terminal SNR");
        Assert.Equal(0f, rescaled.AlphasCumprod[-1].item<float>());
        // sd-scripts' all_snr is computed before the betas are rescaled (train_network.py's get_noise_scheduler).
        var all = LossFunctions.Snr(plain.AlphasCumprod, TorchSharp.torch.arange(1000L));
        TensorAssert.Close(Values(Root.GetProperty("all_snr_zero_terminal_snr")), all, Float32, "all_snr");
    }

    [Fact]
    public void InputPerturbationNoisesTheLatentsWithNoisePlusGammaTimesTheDrawAsSdScripts()
    {
        using var scope = NewDisposeScope();
        var ip = Root.GetProperty("ip_noise");
        using var scheduler = new DdpmScheduler(SchedulerFixture.Sd15Config());
        var latents = Tensor(ip, "latents", "shape");
        var noise = Tensor(ip, "noise", "shape");
        var perturbation = Tensor(ip, "perturbation", "shape");
        var timesteps = tensor(ip.GetProperty("timesteps").EnumerateArray().Select(t => t.GetInt64()).ToArray());
        var noisy = LoraStep.NoisyLatents(scheduler, latents, noise, timesteps, perturbation, ip.GetProperty("ip_noise_gamma").GetDouble());
        TensorAssert.Close(Tensor(ip, "noisy_latents", "shape"), noisy, Float32, "noisy latents");
        var plain = LoraStep.NoisyLatents(scheduler, latents, noise, timesteps, null, null);
        TensorAssert.Identical(scheduler.AddNoise(latents, noise, timesteps), plain, "without perturbation: add_noise as before");
    }

    [Fact]
    public void InvalidLossCombinationsAreReportedNamingOptionAndValue()
    {
        var errors = new LoraTrainingOptions { HuberC = 0.2, HuberSchedule = HuberSchedule.Constant }.Validate(hasDatasetObject: true).ToDictionary(e => e.Option);
        Assert.Equal("0.2", errors["HuberC"].Value);
        Assert.Contains("Huber and SmoothL1", errors["HuberC"].Message);
        Assert.Contains("Huber and SmoothL1", errors["HuberSchedule"].Message);
        errors = new LoraTrainingOptions { LossType = LossType.Huber, HuberC = 0, IpNoiseGamma = -0.1, VPredLikeLoss = double.NaN }.Validate(hasDatasetObject: true).ToDictionary(e => e.Option);
        Assert.Equal("0", errors["HuberC"].Value);
        Assert.Equal("-0.1", errors["IpNoiseGamma"].Value);
        Assert.Equal("NaN", errors["VPredLikeLoss"].Value);
        Assert.Empty(new LoraTrainingOptions { LossType = LossType.SmoothL1, HuberC = 0.3, HuberSchedule = HuberSchedule.Exponential, DebiasedEstimation = true, IpNoiseGamma = 0.1 }
            .Validate(hasDatasetObject: true));
    }

    private static bool Bool(JsonElement settings, string name) => settings.TryGetProperty(name, out var value) && value.GetBoolean();

    private static Tensor Values(JsonElement array) => tensor(array.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray());

    private static Tensor Tensor(JsonElement owner, string name, string shapeName) =>
        Values(owner.GetProperty(name)).reshape(owner.GetProperty(shapeName).EnumerateArray().Select(d => d.GetInt64()).ToArray());
}
