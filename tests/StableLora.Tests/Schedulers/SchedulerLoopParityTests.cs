using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;

namespace StableLora.Tests.Schedulers;

/// <summary>
/// The fixture's <c>scheduler_*</c> cases: <c>&lt;Class&gt;.from_config(SD 1.5 config)</c>, 20 steps, driven by the fake
/// model; every step's model input, model output, sample and pred_original against diffusers 0.21.4.
/// </summary>
public sealed class SchedulerLoopParityTests(ITestOutputHelper output)
{
    private const string File = "schedulers.safetensors";
    private const int Steps = 20;

    [Theory]
    [InlineData(SchedulerKind.Ddim, "DDIM")]
    [InlineData(SchedulerKind.Pndm, "PNDM")]
    [InlineData(SchedulerKind.EulerDiscrete, "EulerDiscrete")]
    [InlineData(SchedulerKind.EulerAncestralDiscrete, "EulerAncestralDiscrete")]
    [InlineData(SchedulerKind.DpmSolverMultistep, "DPMSolverMultistep")]
    public void LoopMatchesDiffusers(SchedulerKind kind, string prefix)
    {
        string caseId = $"scheduler_{prefix}";
        var fixtureCase = FixtureCases.Case(caseId);
        var tolerance = FixtureCases.Tolerance(caseId);
        var config = SchedulerFixture.Sd15Config();
        if (kind == SchedulerKind.DpmSolverMultistep)
            config = config with { AlgorithmType = "dpmsolver++", SolverOrder = 2 };

        using var scope = torch.NewDisposeScope();
        using var reader = SchedulerFixture.Open(File);
        var names = reader.Tensors.Select(t => t.Name).ToHashSet();
        using var scheduler = SchedulerFactory.Create(kind, config);
        scheduler.SetTimesteps(Steps);
        var report = new DiffReport(output, prefix);

        SchedulerFixture.AssertBitEqual(reader.Read($"{prefix}_timesteps"), scheduler.Timesteps, "timesteps");
        Assert.Equal(fixtureCase.GetProperty("num_steps_in_loop").GetInt32(), scheduler.StepCount);
        Assert.Equal(fixtureCase.GetProperty("init_noise_sigma").GetDouble(), scheduler.InitNoiseSigma);
        CheckSigmas(scheduler, names.Contains($"{prefix}_sigmas") ? reader.Read($"{prefix}_sigmas") : null, report);

        using var generator = fixtureCase.GetProperty("generator").ValueKind == System.Text.Json.JsonValueKind.Null ? null : new torch.Generator().manual_seed(404);
        var sample = reader.Read("loop_initial_noise") * scheduler.InitNoiseSigma;
        report.Add("initial_sample", SchedulerFixture.Check(reader.Read($"{prefix}_initial_sample"), sample, tolerance, "initial_sample"));

        for (int i = 0; i < scheduler.StepCount; i++)
        {
            var modelInput = scheduler.ScaleModelInput(sample, i);
            report.Add("model_input", SchedulerFixture.Check(reader.Read($"{prefix}_model_input_{i}"), modelInput, tolerance, $"model_input_{i}"));
            var modelOutput = SchedulerFixture.FakeModel(modelInput, scheduler.TimestepAt(i));
            report.Add("model_output", SchedulerFixture.Check(reader.Read($"{prefix}_model_output_{i}"), modelOutput, tolerance, $"model_output_{i}"));

            var step = scheduler.Step(modelOutput, i, sample, generator);
            sample = step.PrevSample;
            report.Add("sample", SchedulerFixture.Check(reader.Read($"{prefix}_sample_{i}"), sample, tolerance, $"sample_{i}"));
            if (names.Contains($"{prefix}_pred_original_{i}"))
            {
                Assert.NotNull(step.PredOriginalSample);
                report.Add("pred_original", SchedulerFixture.Check(reader.Read($"{prefix}_pred_original_{i}"), step.PredOriginalSample, tolerance, $"pred_original_{i}"));
            }
            else
            {
                Assert.Null(step.PredOriginalSample);
            }
        }
        report.Write();
    }

    /// <summary>Euler's per-step sigmas and DPM-Solver's training table are stored; DDIM and PNDM have none.</summary>
    private static void CheckSigmas(IScheduler scheduler, torch.Tensor? expected, DiffReport report)
    {
        var actual = scheduler switch
        {
            EulerSchedulerBase euler => torch.tensor(euler.SigmaValues),
            DpmSolverMultistepScheduler dpm => torch.tensor(dpm.Sigmas.ToArray()).to(torch.float32),
            _ => null,
        };
        Assert.Equal(expected is null, actual is null);
        if (expected is not null)
        {
            SchedulerFixture.AssertBitEqual(expected, actual!, "sigmas");
            report.AddExact("sigmas");
        }
    }
}
