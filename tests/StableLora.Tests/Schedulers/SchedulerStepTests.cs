using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;

namespace StableLora.Tests.Schedulers;

/// <summary>Step paths without a fixture (PNDM's PRK warm-up, DDIM with eta &gt; 0) and per-generation state handling.</summary>
public sealed class SchedulerStepTests(ITestOutputHelper output)
{
    private static readonly Tolerance Tight = new(1e-5, 1e-4);

    /// <summary>
    /// The first PRK group is one Runge-Kutta step of size h = 100 from t = 901 built from four PNDM transfers of the
    /// group's starting sample: 901->851 with e1, 901->851 with e2, 901->801 with e3, then 901->801 with
    /// e1/6 + e2/3 + e3/3 + e4/6, where e_k is the model at the previous transfer's result.
    /// </summary>
    [Fact]
    public void PrkWarmUpIsOneRungeKuttaStepPerGroupOfFour()
    {
        using var scope = torch.NewDisposeScope();
        using var pndm = new PndmScheduler(SchedulerFixture.Sd15Config() with { SkipPrkSteps = false });
        pndm.SetTimesteps(10);
        double[] acp = pndm.AlphasCumprod.data<float>().ToArray().Select(a => (double)a).ToArray();
        torch.Tensor Transfer(torch.Tensor x, long from, long to, torch.Tensor eps)
        {
            double a = acp[from], aPrev = to >= 0 ? acp[to] : acp[0];
            double denominator = a * Math.Sqrt(1 - aPrev) + Math.Sqrt(a * (1 - a) * aPrev);
            return Math.Sqrt(aPrev / a) * x - (aPrev - a) * eps / denominator;
        }
        torch.Tensor Model(torch.Tensor x, long t) => SchedulerFixture.FakeModel(x, torch.tensor(t));

        var x0 = torch.randn([1, 4, 8, 8], generator: new torch.Generator(11)).to(torch.float64);
        var e1 = Model(x0, 901);
        var xa = Transfer(x0, 901, 851, e1);
        var e2 = Model(xa, 851);
        var xb = Transfer(x0, 901, 851, e2);
        var e3 = Model(xb, 851);
        var xc = Transfer(x0, 901, 801, e3);
        var e4 = Model(xc, 801);
        var xd = Transfer(x0, 901, 801, e1 / 6 + e2 / 3 + e3 / 3 + e4 / 6);
        var expected = new[] { xa, xb, xc, xd };

        var sample = x0.to(torch.float32);
        for (int i = 0; i < 4; i++)
        {
            var modelOutput = SchedulerFixture.FakeModel(sample, pndm.TimestepAt(i));
            sample = pndm.Step(modelOutput, i, sample).PrevSample;
            TensorAssert.Close(expected[i], sample, Tight, $"PRK step {i}");
        }

        // The rest (two more PRK groups, then PLMS with the three PRK-group outputs as history) runs through.
        for (int i = 4; i < pndm.StepCount; i++)
            sample = pndm.Step(SchedulerFixture.FakeModel(sample, pndm.TimestepAt(i)), i, sample).PrevSample;
        Assert.False(sample.isnan().any().item<bool>());
    }

    [Fact]
    public void DdimWithEtaAddsScaledGeneratorNoise()
    {
        using var scope = torch.NewDisposeScope();
        const double eta = 0.7;
        using var ddim = new DdimScheduler(SchedulerFixture.Sd15Config(), eta);
        ddim.SetTimesteps(10);
        double[] acp = ddim.AlphasCumprod.data<float>().ToArray().Select(a => (double)a).ToArray();
        var sample = torch.randn([1, 4, 8, 8], generator: new torch.Generator(21));
        var modelOutput = torch.randn([1, 4, 8, 8], generator: new torch.Generator(22));

        using var generator = new torch.Generator(23);
        var actual = ddim.Step(modelOutput, 2, sample, generator).PrevSample;

        // Song et al. (2021) eq. 12 with sigma_t = eta * sqrt((1 - a_prev) / (1 - a)) * sqrt(1 - a / a_prev).
        long t = ddim.Timesteps[2].item<long>();
        double a = acp[t], aPrev = acp[t - 100];
        double std = eta * Math.Sqrt((1 - aPrev) / (1 - a) * (1 - a / aPrev));
        var s = sample.to(torch.float64);
        var e = modelOutput.to(torch.float64);
        var x0 = (s - Math.Sqrt(1 - a) * e) / Math.Sqrt(a);
        var noise = torch.randn([1, 4, 8, 8], generator: new torch.Generator(23)).to(torch.float64);
        var expected = Math.Sqrt(aPrev) * x0 + Math.Sqrt(1 - aPrev - std * std) * e + std * noise;
        TensorAssert.Close(expected, actual, Tight, "DDIM eta step");

        using var deterministic = new DdimScheduler(SchedulerFixture.Sd15Config());
        deterministic.SetTimesteps(10);
        using var untouched = new torch.Generator(23);
        var state = untouched.get_state();
        deterministic.Step(modelOutput, 2, sample, untouched);
        Assert.True(TensorAssert.BitEqual(state, untouched.get_state()), "eta = 0 must not draw noise");
    }

    [Fact]
    public void EulerDrawsAndDiscardsOneNoiseTensorPerStepLikeDiffusers()
    {
        using var scope = torch.NewDisposeScope();
        using var euler = new EulerDiscreteScheduler(SchedulerFixture.Sd15Config());
        euler.SetTimesteps(5);
        var sample = torch.randn([1, 4, 8, 8], generator: new torch.Generator(1));
        using var used = new torch.Generator(2);
        using var replica = new torch.Generator(2);
        var withGenerator = euler.Step(sample, 0, sample, used).PrevSample;
        var without = euler.Step(sample, 0, sample).PrevSample;
        TensorAssert.Identical(without, withGenerator, "the drawn noise must not change the result");
        torch.randn([1, 4, 8, 8], torch.float32, generator: replica);
        Assert.True(TensorAssert.BitEqual(replica.get_state(), used.get_state()), "one latent-shaped draw per step");
    }

    [Theory]
    [InlineData(SchedulerKind.Pndm)]
    [InlineData(SchedulerKind.DpmSolverMultistep)]
    public void MultistepSchedulersKeepTheirHistoryWhenTheCallerDisposesAndResetOnSetTimesteps(SchedulerKind kind)
    {
        string prefix = kind == SchedulerKind.Pndm ? "PNDM" : "DPMSolverMultistep";
        using var reader = SchedulerFixture.Open("schedulers.safetensors");
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config());
        for (int run = 0; run < 2; run++)
        {
            scheduler.SetTimesteps(20);
            var sample = reader.Read("loop_initial_noise");
            for (int i = 0; i < scheduler.StepCount; i++)
            {
                // Every tensor the caller made is gone before the next step; the scheduler's history must not be.
                using (var stepScope = torch.NewDisposeScope())
                {
                    var modelOutput = SchedulerFixture.FakeModel(scheduler.ScaleModelInput(sample, i), scheduler.TimestepAt(i));
                    var next = scheduler.Step(modelOutput, i, sample).PrevSample.MoveToOuterDisposeScope();
                    sample.Dispose();
                    sample = next;
                }
            }
            using var expected = reader.Read($"{prefix}_sample_{scheduler.StepCount - 1}");
            double difference = TensorAssert.MaxAbsDiff(expected, sample);
            output.WriteLine($"{prefix} run {run}: final max |diff| {difference:G3}");
            TensorAssert.Close(expected, sample, FixtureCases.Tolerance($"scheduler_{prefix}"), $"run {run}");
            sample.Dispose();
        }
    }

    [Theory]
    [InlineData(SchedulerKind.Pndm)]
    [InlineData(SchedulerKind.DpmSolverMultistep)]
    public void MultistepSchedulersMustBeSteppedInOrder(SchedulerKind kind)
    {
        using var scope = torch.NewDisposeScope();
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config());
        scheduler.SetTimesteps(10);
        var sample = torch.zeros(1, 4, 2, 2);
        scheduler.Step(sample, 0, sample);
        Assert.Throws<InvalidOperationException>(() => scheduler.Step(sample, 2, sample));
        Assert.Throws<InvalidOperationException>(() => scheduler.Step(sample, 0, sample));
        scheduler.SetTimesteps(10);
        scheduler.Step(sample, 0, sample);
    }

    [Theory]
    [InlineData(SchedulerKind.Ddim)]
    [InlineData(SchedulerKind.EulerAncestralDiscrete)]
    [InlineData(SchedulerKind.DpmSolverMultistep)]
    public void StepIndicesAndStepCountsAreChecked(SchedulerKind kind)
    {
        using var scope = torch.NewDisposeScope();
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config());
        Assert.Equal("Steps", Assert.Throws<InvalidOptionsException>(() => scheduler.SetTimesteps(0)).Errors[0].Option);
        Assert.Equal("Steps", Assert.Throws<InvalidOptionsException>(() => scheduler.SetTimesteps(1001)).Errors[0].Option);
        scheduler.SetTimesteps(5);
        var sample = torch.zeros(1, 4, 2, 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.ScaleModelInput(sample, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.Step(sample, -1, sample));
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.TimestepAt(5));
    }
}
