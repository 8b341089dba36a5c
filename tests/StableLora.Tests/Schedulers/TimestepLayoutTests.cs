using StableLora.Schedulers;
using TorchSharp;

namespace StableLora.Tests.Schedulers;

/// <summary>
/// Timestep layouts other than the fixture's (which covers the SD 1.5 defaults), worked out by hand from the NumPy
/// expressions in diffusers 0.21.4's <c>set_timesteps</c> (np.round is round-half-to-even: 499.5 -> 500, 166.5 -> 166).
/// </summary>
public sealed class TimestepLayoutTests
{
    public static TheoryData<SchedulerKind, string, int, long[]> IntegerLayouts => new()
    {
        { SchedulerKind.Ddim, "trailing", 10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99] },
        { SchedulerKind.Ddim, "trailing", 3, [999, 666, 332] },
        { SchedulerKind.Ddim, "linspace", 4, [999, 666, 333, 0] },
        { SchedulerKind.Ddim, "leading", 7, [853, 711, 569, 427, 285, 143, 1] },
        { SchedulerKind.Ddpm, "linspace", 5, [999, 749, 500, 250, 0] },
        { SchedulerKind.Pndm, "linspace", 5, [999, 749, 749, 500, 250, 0] },
        { SchedulerKind.Pndm, "trailing", 4, [999, 749, 749, 499, 249] },
        { SchedulerKind.DpmSolverMultistep, "leading", 10, [901, 811, 721, 631, 541, 451, 361, 271, 181, 91] },
        { SchedulerKind.DpmSolverMultistep, "trailing", 4, [999, 749, 499, 249] },
        { SchedulerKind.DpmSolverMultistep, "linspace", 12, [999, 916, 832, 749, 666, 583, 500, 416, 333, 250, 166, 83] },
    };

    [Theory]
    [MemberData(nameof(IntegerLayouts))]
    public void IntegerTimesteps(SchedulerKind kind, string spacing, int steps, long[] expected)
    {
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config() with { TimestepSpacing = spacing });
        scheduler.SetTimesteps(steps);
        Assert.Equal(torch.int64, scheduler.Timesteps.dtype);
        Assert.Equal(expected, scheduler.Timesteps.data<long>().ToArray());
        Assert.Equal(expected.Length, scheduler.StepCount);
    }

    public static TheoryData<SchedulerKind, string, int, float[]> FloatLayouts => new()
    {
        { SchedulerKind.EulerDiscrete, "linspace", 3, [999f, 499.5f, 0f] },
        { SchedulerKind.EulerDiscrete, "leading", 10, [901f, 801f, 701f, 601f, 501f, 401f, 301f, 201f, 101f, 1f] },
        { SchedulerKind.EulerAncestralDiscrete, "trailing", 3, [999f, 666f, 332f] },
        { SchedulerKind.EulerAncestralDiscrete, "linspace", 7, [999f, 832.5f, 666f, 499.5f, 333f, 166.5f, 0f] },
    };

    [Theory]
    [MemberData(nameof(FloatLayouts))]
    public void EulerTimestepsAreFloat32(SchedulerKind kind, string spacing, int steps, float[] expected)
    {
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config() with { TimestepSpacing = spacing });
        scheduler.SetTimesteps(steps);
        Assert.Equal(torch.float32, scheduler.Timesteps.dtype);
        Assert.Equal(expected, scheduler.Timesteps.data<float>().ToArray());
    }

    [Fact]
    public void PndmWithPrkStepsRunsTwelveRungeKuttaStepsOverTheLastFourTimestepsFirst()
    {
        using var scheduler = new PndmScheduler(SchedulerFixture.Sd15Config() with { SkipPrkSteps = false });
        scheduler.SetTimesteps(10);
        long[] prk = [901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601];
        long[] plms = [601, 501, 401, 301, 201, 101, 1];
        Assert.Equal(prk.Concat(plms), scheduler.Timesteps.data<long>().ToArray());
        Assert.Contains("skip_prk_steps", Assert.Throws<InvalidOptionsException>(() => scheduler.SetTimesteps(3)).Message);
    }

    [Fact]
    public void EulerInitNoiseSigmaIsSigmaMaxForLinspaceAndTrailingButAddsOneInQuadratureForLeading()
    {
        var config = SchedulerFixture.Sd15Config();
        using var linspace = new EulerDiscreteScheduler(config);
        linspace.SetTimesteps(20);
        float sigmaMax = linspace.SigmaValues[0];
        Assert.Equal(sigmaMax, linspace.InitNoiseSigma);

        using var leading = new EulerDiscreteScheduler(config with { TimestepSpacing = "leading" });
        leading.SetTimesteps(20);
        float leadingMax = leading.SigmaValues[0];
        Assert.Equal(MathF.Sqrt(leadingMax * leadingMax + 1), leading.InitNoiseSigma);
        Assert.True(leadingMax < sigmaMax);
        Assert.Equal(0f, leading.SigmaValues[^1]);
    }

    [Fact]
    public void DpmLambdaMinClippedCutsTheHighNoiseEndOfTheSchedule()
    {
        using var ddpm = new DdpmScheduler(SchedulerFixture.Sd15Config());
        double[] acp = ddpm.AlphasCumprod.data<float>().ToArray().Select(a => (double)a).ToArray();
        double Lambda(long t) => Math.Log(Math.Sqrt(acp[t])) - Math.Log(Math.Sqrt(1 - acp[t]));
        const double clip = -2.5;

        using var dpm = new DpmSolverMultistepScheduler(SchedulerFixture.Sd15Config() with { LambdaMinClipped = clip });
        dpm.SetTimesteps(10);
        long first = dpm.Timesteps[0].item<long>();
        int lastTimestep = Enumerable.Range(0, 1000).Count(t => Lambda(t) >= clip);
        Assert.True(lastTimestep < 1000);
        Assert.Equal(lastTimestep - 1, first);
        Assert.True(Lambda(first) >= clip);
    }
}
