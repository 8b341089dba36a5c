using StableLora.Schedulers;

namespace StableLora.Tests.Schedulers;

/// <summary>The beta schedules the fixture does not use (it covers scaled_linear), checked against their definitions.</summary>
public sealed class NoiseScheduleTests
{
    [Fact]
    public void LinearBetasRunFromBetaStartToBetaEnd()
    {
        using var ddim = new DdimScheduler(SchedulerFixture.Sd15Config() with { BetaSchedule = "linear", BetaStart = 0.0001, BetaEnd = 0.02 });
        float[] betas = ddim.Betas.data<float>().ToArray();
        Assert.Equal(1000, betas.Length);
        Assert.Equal(0.0001f, betas[0]);
        Assert.Equal(0.02f, betas[^1]);
        for (int i = 0; i < betas.Length; i++)
            Assert.Equal(0.0001 + i * (0.02 - 0.0001) / 999, betas[i], 3e-9);
    }

    [Fact]
    public void CosineBetasFollowTheAlphaBarOfNicholAndDhariwal()
    {
        using var pndm = new PndmScheduler(SchedulerFixture.Sd15Config() with { BetaSchedule = "squaredcos_cap_v2" });
        float[] betas = pndm.Betas.data<float>().ToArray();
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        for (int i = 0; i < 1000; i++)
            Assert.Equal((float)Math.Min(1 - AlphaBar((i + 1) / 1000.0) / AlphaBar(i / 1000.0), 0.999), betas[i]);
        Assert.Equal(0.999f, betas[^1]);
    }

    [Fact]
    public void SigmoidBetasFollowTheLogisticCurve()
    {
        using var ddpm = new DdpmScheduler(SchedulerFixture.Sd15Config() with { BetaSchedule = "sigmoid", BetaStart = 0.0001, BetaEnd = 0.02 });
        float[] betas = ddpm.Betas.data<float>().ToArray();
        for (int i = 0; i < betas.Length; i++)
            Assert.Equal(0.0001 + (0.02 - 0.0001) / (1 + Math.Exp(-(-6 + 12.0 * i / 999))), betas[i], 1e-8);
    }

    [Fact]
    public void ZeroTerminalSnrRescalingEndsAtAlphaBarZeroAndKeepsTheStart()
    {
        var config = SchedulerFixture.Sd15Config();
        using var plain = new DdimScheduler(config);
        using var rescaled = new DdimScheduler(config with { RescaleBetasZeroSnr = true, PredictionType = "v_prediction" });
        float[] before = plain.AlphasCumprod.data<float>().ToArray();
        float[] after = rescaled.AlphasCumprod.data<float>().ToArray();
        Assert.Equal(0f, after[^1]);
        Assert.Equal(1f, rescaled.Betas.data<float>().ToArray()[^1]);
        Assert.Equal(before[0], after[0], 1e-6);

        // sqrt(acp) is shifted and scaled linearly: (s - s_T) * s_0 / (s_0 - s_T).
        double s0 = Math.Sqrt(before[0]), sT = Math.Sqrt(before[^1]);
        for (int t = 0; t < 1000; t += 111)
            Assert.Equal(Math.Pow((Math.Sqrt(before[t]) - sT) * s0 / (s0 - sT), 2), after[t], 1e-5);
    }
}
