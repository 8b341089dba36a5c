using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;

namespace StableLora.Tests.Schedulers;

/// <summary>The fixture's <c>ddpm</c> case (training noise schedule, add_noise, get_velocity) and DDPM sampling steps.</summary>
public sealed class DdpmTests(ITestOutputHelper output)
{
    private const string File = "schedulers.safetensors";

    [Fact]
    public void BetasAndAlphasCumprodMatchDiffusers()
    {
        using var scope = torch.NewDisposeScope();
        using var reader = SchedulerFixture.Open(File);
        using var ddpm = new DdpmScheduler(SchedulerFixture.Sd15Config());
        var tolerance = FixtureCases.Tolerance("ddpm");
        var report = new DiffReport(output, "DDPM schedule");
        report.Add("betas", SchedulerFixture.Check(reader.Read("ddpm_betas"), ddpm.Betas, tolerance, "betas"));
        report.Add("alphas_cumprod", SchedulerFixture.Check(reader.Read("ddpm_alphas_cumprod"), ddpm.AlphasCumprod, tolerance, "alphas_cumprod"));
        report.Write();
        Assert.Equal(torch.float32, ddpm.AlphasCumprod.dtype);
    }

    [Fact]
    public void AddNoiseAndVelocityMatchDiffusers()
    {
        using var scope = torch.NewDisposeScope();
        using var reader = SchedulerFixture.Open(File);
        using var ddpm = new DdpmScheduler(SchedulerFixture.Sd15Config());
        var tolerance = FixtureCases.Tolerance("ddpm");
        var original = reader.Read("ddpm_original_samples");
        var noise = reader.Read("ddpm_noise");
        var timesteps = reader.Read("ddpm_timesteps");
        var report = new DiffReport(output, "DDPM training targets");
        report.Add("add_noise", SchedulerFixture.Check(reader.Read("ddpm_noisy"), ddpm.AddNoise(original, noise, timesteps), tolerance, "add_noise"));
        report.Add("get_velocity", SchedulerFixture.Check(reader.Read("ddpm_velocity"), ddpm.GetVelocity(original, noise, timesteps), tolerance, "get_velocity"));
        report.Write();
    }

    [Fact]
    public void SamplingStepAddsGeneratorNoiseScaledByThePosteriorStdDev()
    {
        using var scope = torch.NewDisposeScope();
        using var ddpm = new DdpmScheduler(SchedulerFixture.Sd15Config());
        ddpm.SetTimesteps(10);
        Assert.Equal(new long[] { 901, 801, 701, 601, 501, 401, 301, 201, 101, 1 }, ddpm.Timesteps.data<long>().ToArray());
        var acp = ddpm.AlphasCumprod.to(torch.float64);
        var sample = torch.randn([1, 4, 8, 8], generator: new torch.Generator(5));
        var modelOutput = torch.randn([1, 4, 8, 8], generator: new torch.Generator(6));

        foreach (int i in new[] { 0, 9 })
        {
            long t = ddpm.Timesteps[i].item<long>();
            long prev = t - 100;
            using var generator = new torch.Generator(77);
            var actual = ddpm.Step(modelOutput, i, sample, generator).PrevSample;

            // Ho et al. (2020) eq. 7: posterior mean from x0 and x_t, plus sqrt(beta~_t) * z.
            double a = acp[t].item<double>(), aPrev = prev >= 0 ? acp[prev].item<double>() : 1.0;
            double betaT = 1 - a / aPrev;
            var x0 = (sample.to(torch.float64) - Math.Sqrt(1 - a) * modelOutput.to(torch.float64)) / Math.Sqrt(a);
            var mean = Math.Sqrt(aPrev) * betaT / (1 - a) * x0 + Math.Sqrt(1 - betaT) * (1 - aPrev) / (1 - a) * sample.to(torch.float64);
            var z = torch.randn([1, 4, 8, 8], generator: new torch.Generator(77)).to(torch.float64);
            var expected = mean + Math.Sqrt((1 - aPrev) / (1 - a) * betaT) * z;
            TensorAssert.Close(expected, actual, new Tolerance(2e-5, 1e-4), $"DDPM step {i} (t={t})");
        }
    }

    [Fact]
    public void FinalStepAtTimestepZeroDrawsNoNoise()
    {
        using var scope = torch.NewDisposeScope();
        using var ddpm = new DdpmScheduler(SchedulerFixture.Sd15Config() with { StepsOffset = 0 });
        ddpm.SetTimesteps(10);
        Assert.Equal(0, ddpm.Timesteps[9].item<long>());
        using var generator = new torch.Generator(3);
        var before = generator.get_state();
        ddpm.Step(torch.ones(1, 4, 2, 2), 9, torch.ones(1, 4, 2, 2), generator);
        Assert.True(TensorAssert.BitEqual(before, generator.get_state()), "the generator advanced at t = 0");
        ddpm.Step(torch.ones(1, 4, 2, 2), 8, torch.ones(1, 4, 2, 2), generator);
        Assert.False(TensorAssert.BitEqual(before, generator.get_state()), "the generator did not advance at t > 0");
    }
}
