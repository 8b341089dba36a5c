using System.Text.Json;
using System.Text.Json.Nodes;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace StableLora.Tests.Schedulers;

/// <summary>
/// The cases of <c>Fixtures/scheduler-edge-cases/cases.json</c> (written by tools/generate_scheduler_edge_cases.py with
/// diffusers 0.21.4): every scheduler class x 1, 2, 3 and 10 steps x the config options SD 1.x/2.x folders carry.
/// StableLora must give diffusers' timesteps exactly and its loop within float32 rounding, or, where diffusers raises or
/// where StableLora deliberately refuses an option (<see cref="Refusal"/>), throw a documented exception naming the
/// option.
/// </summary>
public sealed class SchedulerEdgeCaseTests(ITestOutputHelper output)
{
    private static readonly Tolerance LoopTolerance = new(1e-5, 1e-4);
    private static readonly Tolerance InputTolerance = new(1e-6, 1e-5);

    private static readonly Lazy<JsonDocument> Document = new(() => JsonDocument.Parse(File.ReadAllText(CasesPath)));

    public static string CasesPath => Path.Combine(FixturePaths.Root, "scheduler-edge-cases", "cases.json");

    public static TheoryData<string> ClassNames => new(SchedulerKindNames.ClassNames);

    private static JsonElement Root => Document.Value.RootElement;

    /// <summary>
    /// Options StableLora refuses although diffusers accepts them: the config key (or <c>Steps</c>) the error must name,
    /// or null. Why each is refused is in docs/generation.md.
    /// </summary>
    public static string? Refusal(JsonElement fixtureCase)
    {
        var config = fixtureCase.GetProperty("config");
        if (config.TryGetProperty("thresholding", out var thresholding) && thresholding.GetBoolean())
            return "thresholding";
        if (config.TryGetProperty("interpolation_type", out var interpolation) && interpolation.GetString() != "linear")
            return "interpolation_type";
        if (config.TryGetProperty("rescale_betas_zero_snr", out var zeroSnr) && zeroSnr.GetBoolean()
            && (!config.TryGetProperty("prediction_type", out var prediction) || prediction.GetString() == "epsilon"))
            return "rescale_betas_zero_snr";
        if (config.TryGetProperty("lambda_min_clipped", out var clip) && clip.ValueKind == JsonValueKind.Number && clip.GetDouble() > 5)
            return "lambda_min_clipped";
        if (config.TryGetProperty("algorithm_type", out var algorithm) && algorithm.GetString() is not ("dpmsolver++" or "deis"))
            return "algorithm_type";
        if (fixtureCase.GetProperty("steps").GetInt32() < 1)
            return "Steps";
        if (fixtureCase.GetProperty("steps").GetInt32() > Root.GetProperty("base_config").GetProperty("num_train_timesteps").GetInt32())
            return "Steps";
        return null;
    }

    [Theory]
    [MemberData(nameof(ClassNames))]
    public void EveryCaseOfTheClassMatchesDiffusersOrFailsNamingTheOption(string className)
    {
        var cases = Root.GetProperty("cases").EnumerateArray().Where(c => c.GetProperty("class").GetString() == className).ToList();
        Assert.NotEmpty(cases);
        var failures = new List<string>();
        double worstLoop = 0;
        string worstCase = "";
        int compared = 0, refused = 0;
        foreach (var fixtureCase in cases)
        {
            try
            {
                bool ran = RunCase(fixtureCase, out double loopDiff);
                if (loopDiff > worstLoop)
                {
                    worstLoop = loopDiff;
                    worstCase = fixtureCase.GetProperty("id").GetString()!;
                }
                if (ran)
                    compared++;
                else
                    refused++;
            }
            catch (Exception e)
            {
                failures.Add($"{fixtureCase.GetProperty("id").GetString()}: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            }
        }
        output.WriteLine($"{className}: {compared} cases match diffusers (final sample max |diff| {worstLoop:G3}{(worstLoop > 0 ? $" in {worstCase}" : "")}), {refused} fail naming the option as expected");
        if (failures.Count > 0)
            throw new XunitException($"{failures.Count} of {cases.Count} cases differ:\n" + string.Join("\n", failures));
    }

    [Fact]
    public void TheCasesCoverEveryClassAndOneTwoAndThreeSteps()
    {
        var cases = Root.GetProperty("cases").EnumerateArray().ToList();
        Assert.Equal("0.21.4", Root.GetProperty("versions").GetProperty("diffusers").GetString());
        foreach (string className in SchedulerKindNames.ClassNames)
        {
            foreach (int steps in new[] { 1, 2, 3 })
                Assert.Contains(cases, c => c.GetProperty("class").GetString() == className && c.GetProperty("steps").GetInt32() == steps && c.TryGetProperty("final_sample", out _));
        }
    }

    /// <summary>Runs one case; true when it was compared with diffusers' numbers, false when it failed as expected.</summary>
    private static bool RunCase(JsonElement fixtureCase, out double loopDiff)
    {
        loopDiff = 0;
        string? refusal = Refusal(fixtureCase);
        bool diffusersRaises = fixtureCase.TryGetProperty("error", out var error);
        if (refusal is null && diffusersRaises)
            refusal = ExpectedOption(fixtureCase, error);

        using var scope = torch.NewDisposeScope();
        var kind = SchedulerKindNames.Parse(fixtureCase.GetProperty("class").GetString()!);
        int steps = fixtureCase.GetProperty("steps").GetInt32();
        if (refusal is not null)
        {
            var thrown = Record.Exception(() =>
            {
                using var scheduler = SchedulerFactory.Create(kind, Config(fixtureCase));
                scheduler.SetTimesteps(steps);
            });
            if (thrown is null)
                throw new XunitException($"expected an error naming '{refusal}', but StableLora accepts it");
            if (thrown is not (ModelConfigException or InvalidOptionsException))
                throw new XunitException($"expected ModelConfigException or InvalidOptionsException naming '{refusal}', got {thrown.GetType().Name}: {thrown.Message}");
            if (!thrown.Message.Contains(refusal, StringComparison.Ordinal) || thrown.Message.Contains('\n', StringComparison.Ordinal))
                throw new XunitException($"the error should be one line naming '{refusal}': {thrown.Message}");
            return false;
        }

        using (var scheduler = SchedulerFactory.Create(kind, Config(fixtureCase)))
        {
            scheduler.SetTimesteps(steps);
            if (fixtureCase.TryGetProperty("timestep_count", out var count))
            {
                Assert.Equal(count.GetInt32(), scheduler.StepCount);
                if (!fixtureCase.TryGetProperty("final_sample", out _))
                    return true;
            }

            CheckTimesteps(fixtureCase, scheduler);
            Assert.Equal(fixtureCase.GetProperty("model_evaluations").GetInt32(), scheduler.StepCount);
            float expectedSigma = (float)fixtureCase.GetProperty("init_noise_sigma").GetDouble();
            if ((float)scheduler.InitNoiseSigma != expectedSigma)
                throw new XunitException($"init_noise_sigma: expected {expectedSigma:R}, got {scheduler.InitNoiseSigma:R}");
            if (fixtureCase.TryGetProperty("sigmas", out var sigmas))
                Assert.Equal(Floats(sigmas), ((EulerSchedulerBase)scheduler).SigmaValues);

            bool stochastic = Root.GetProperty("stochastic_classes").EnumerateArray().Any(c => c.GetString() == fixtureCase.GetProperty("class").GetString());
            using var generator = stochastic ? new torch.Generator().manual_seed(Root.GetProperty("generator_seed").GetInt64()) : null;
            long[] shape = Root.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            var sample = torch.tensor(Floats(Root.GetProperty("initial_sample"))).reshape(shape) * scheduler.InitNoiseSigma;
            for (int i = 0; i < scheduler.StepCount; i++)
            {
                var modelInput = scheduler.ScaleModelInput(sample, i);
                if (i == 0)
                    TensorAssert.Close(Tensor(fixtureCase.GetProperty("model_input_0"), shape), modelInput, InputTolerance, "model_input_0");
                double t = scheduler.TimestepAt(i).to(torch.float64).item<double>();
                var modelOutput = modelInput * 0.1 + 0.01 * t / 1000;
                sample = scheduler.Step(modelOutput, i, sample, generator).PrevSample;
            }

            var expected = Tensor(fixtureCase.GetProperty("final_sample"), shape);
            TensorAssert.Close(expected, sample, LoopTolerance, "final_sample");
            loopDiff = TensorAssert.MaxAbsDiff(expected, sample);
        }

        return true;
    }

    /// <summary>Where diffusers raises, StableLora must refuse up front, naming the option at fault.</summary>
    private static string ExpectedOption(JsonElement fixtureCase, JsonElement error)
    {
        string message = error.GetProperty("message").GetString()!;
        var config = fixtureCase.GetProperty("config");
        if (message.Contains("prediction_type", StringComparison.Ordinal))
            return "prediction_type";
        if (config.TryGetProperty("skip_prk_steps", out var skip) && !skip.GetBoolean())
            return "Steps";
        if (fixtureCase.GetProperty("steps").GetInt32() < 1)
            return "Steps";
        if (message.Contains("out of bounds", StringComparison.Ordinal))
            return "Steps";
        throw new XunitException($"no expectation for diffusers' error {message}");
    }

    private static void CheckTimesteps(JsonElement fixtureCase, IScheduler scheduler)
    {
        string dtype = fixtureCase.GetProperty("timesteps_dtype").GetString()!;
        // Long schedules (999, 1000 steps) record their first three timesteps only.
        bool firstOnly = fixtureCase.TryGetProperty("first_timesteps", out var expected);
        if (!firstOnly)
            expected = fixtureCase.GetProperty("timesteps");
        var actual = firstOnly ? scheduler.Timesteps.slice(0, 0, 3, 1) : scheduler.Timesteps;
        switch (dtype)
        {
            case "int64":
                Assert.Equal(torch.int64, actual.dtype);
                Assert.Equal(expected.EnumerateArray().Select(t => t.GetInt64()).ToArray(), actual.data<long>().ToArray());
                break;
            case "float32":
                Assert.Equal(torch.float32, actual.dtype);
                Assert.Equal(Floats(expected), actual.data<float>().ToArray());
                break;
            default:
                Assert.Equal(torch.float64, actual.dtype);
                double[] want = expected.EnumerateArray().Select(t => t.GetDouble()).ToArray();
                double[] got = actual.data<double>().ToArray();
                if (!want.SequenceEqual(got))
                    throw new XunitException($"timesteps: expected [{string.Join(", ", want.Select(t => t.ToString("R")))}], got [{string.Join(", ", got.Select(t => t.ToString("R")))}]");
                break;
        }
    }

    /// <summary>The base config (the SD 1.5 file) with the case's keys replaced, read as a scheduler_config.json.</summary>
    private static SchedulerConfig Config(JsonElement fixtureCase)
    {
        var config = JsonNode.Parse(Root.GetProperty("base_config").GetRawText())!.AsObject();
        foreach (var property in fixtureCase.GetProperty("config").EnumerateObject())
            config[property.Name] = JsonNode.Parse(property.Value.GetRawText());
        return SchedulerConfig.FromJson(config.ToJsonString(), $"edge case {fixtureCase.GetProperty("id").GetString()}");
    }

    private static float[] Floats(JsonElement array) => array.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();

    private static torch.Tensor Tensor(JsonElement array, long[] shape) => torch.tensor(Floats(array)).reshape(shape);
}
