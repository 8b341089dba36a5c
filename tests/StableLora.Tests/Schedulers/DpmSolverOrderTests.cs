using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;

namespace StableLora.Tests.Schedulers;

/// <summary>
/// DPM-Solver++ variants the fixture does not cover (it runs 2M/midpoint only): first, second (Heun) and third order,
/// against a float64 transcription of the multistep updates of Lu et al. (2022) in data-prediction form, with
/// h = lambda(t_next) - lambda(t) and D1 = (m0 - m1) / r0 from the previous two x0 estimates.
/// </summary>
public sealed class DpmSolverOrderTests
{
    [Theory]
    [InlineData(1, "midpoint", 20)]
    [InlineData(2, "heun", 20)]
    [InlineData(3, "midpoint", 20)]
    [InlineData(3, "midpoint", 8)]
    [InlineData(2, "midpoint", 8)]
    public void MatchesAFloat64Reference(int order, string solverType, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var config = SchedulerFixture.Sd15Config() with { SolverOrder = order, SolverType = solverType };
        using var dpm = new DpmSolverMultistepScheduler(config);
        dpm.SetTimesteps(steps);
        double[] acp = dpm.AlphasCumprod.data<float>().ToArray().Select(a => (double)a).ToArray();
        double Alpha(long t) => Math.Sqrt(acp[t]);
        double Sigma(long t) => Math.Sqrt(1 - acp[t]);
        double Lambda(long t) => Math.Log(Alpha(t)) - Math.Log(Sigma(t));
        long[] timesteps = dpm.Timesteps.data<long>().ToArray();

        var sample = torch.randn([1, 4, 8, 8], generator: new torch.Generator(31));
        var reference = sample.to(torch.float64);
        var history = new List<torch.Tensor>();
        for (int i = 0; i < timesteps.Length; i++)
        {
            long t = timesteps[i], next = i == timesteps.Length - 1 ? 0 : timesteps[i + 1];
            sample = dpm.Step(SchedulerFixture.FakeModel(sample, dpm.TimestepAt(i)), i, sample).PrevSample;

            var x0 = (reference - Sigma(t) * SchedulerFixture.FakeModel(reference, dpm.TimestepAt(i))) / Alpha(t);
            history.Add(x0);
            int effectiveOrder = Math.Min(order, i + 1);
            if (timesteps.Length < 15)
                effectiveOrder = Math.Min(effectiveOrder, timesteps.Length - i);
            double h = Lambda(next) - Lambda(t);
            double phi = Math.Exp(-h) - 1;
            var update = Sigma(next) / Sigma(t) * reference - Alpha(next) * phi * x0;
            if (effectiveOrder >= 2)
            {
                double r0 = (Lambda(t) - Lambda(timesteps[i - 1])) / h;
                var d10 = (history[^1] - history[^2]) / r0;
                if (effectiveOrder == 2)
                {
                    update = solverType == "heun"
                        ? update + Alpha(next) * (phi / h + 1) * d10
                        : update - 0.5 * Alpha(next) * phi * d10;
                }
                else
                {
                    double r1 = (Lambda(timesteps[i - 1]) - Lambda(timesteps[i - 2])) / h;
                    var d11 = (history[^2] - history[^3]) / r1;
                    var d1 = d10 + r0 / (r0 + r1) * (d10 - d11);
                    var d2 = (d10 - d11) / (r0 + r1);
                    update = update + Alpha(next) * (phi / h + 1) * d1 - Alpha(next) * ((phi + h) / (h * h) - 0.5) * d2;
                }
            }
            reference = update;
            TensorAssert.Close(reference, sample, new Tolerance(1e-5, 1e-4), $"order {order} {solverType}, step {i}");
        }
    }

    [Fact]
    public void FirstOrderDpmSolverPlusPlusIsDdim()
    {
        // x_next = alpha_next * x0 + sigma_next * eps: DDIM's deterministic update, written in lambda.
        using var scope = torch.NewDisposeScope();
        using var dpm = new DpmSolverMultistepScheduler(SchedulerFixture.Sd15Config() with { SolverOrder = 1 });
        dpm.SetTimesteps(10);
        double[] acp = dpm.AlphasCumprod.data<float>().ToArray().Select(a => (double)a).ToArray();
        var sample = torch.randn([1, 4, 8, 8], generator: new torch.Generator(32));
        var eps = torch.randn([1, 4, 8, 8], generator: new torch.Generator(33));
        long t = dpm.Timesteps[0].item<long>(), next = dpm.Timesteps[1].item<long>();
        var x0 = (sample.to(torch.float64) - Math.Sqrt(1 - acp[t]) * eps.to(torch.float64)) / Math.Sqrt(acp[t]);
        var expected = Math.Sqrt(acp[next]) * x0 + Math.Sqrt(1 - acp[next]) * eps.to(torch.float64);
        TensorAssert.Close(expected, dpm.Step(eps, 0, sample).PrevSample, new Tolerance(1e-5, 1e-4), "first-order step");
    }
}
