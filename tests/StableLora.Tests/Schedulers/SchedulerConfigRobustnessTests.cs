using System.Text.Json.Nodes;
using StableLora.Schedulers;
using TorchSharp;

namespace StableLora.Tests.Schedulers;

/// <summary>
/// Odd values for every scheduler_config.json key, for every class at 1, 2 and 3 steps: a scheduler either runs (its
/// numbers are whatever the config implies) or refuses with the library's exceptions naming the key or option, never an
/// internal .NET exception (IndexOutOfRange, NullReference, InvalidCast, DivideByZero, Overflow, ...).
/// </summary>
public sealed class SchedulerConfigRobustnessTests
{
    private static readonly string[] Keys =
    [
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "steps_offset", "timestep_spacing",
        "prediction_type", "clip_sample", "clip_sample_range", "set_alpha_to_one", "skip_prk_steps", "thresholding",
        "rescale_betas_zero_snr", "variance_type", "use_karras_sigmas", "interpolation_type", "solver_order", "algorithm_type",
        "solver_type", "lower_order_final", "lambda_min_clipped",
    ];

    private static readonly string[] OddValues =
    [
        "-1", "0", "1", "2", "3", "2.5", "1e300", "-1e300", "\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "\"\"", "\"x\"", "true", "false",
        "[]", "[0.5, 0.5]", "{}", "2147483648",
    ];

    public static TheoryData<SchedulerKind> Kinds => new(Enum.GetValues<SchedulerKind>());

    [Theory]
    [MemberData(nameof(Kinds))]
    public void OddConfigValuesRunOrFailWithTheLibrarysExceptions(SchedulerKind kind)
    {
        var failures = new List<string>();
        foreach (string key in Keys)
        {
            foreach (string value in OddValues)
            {
                var config = JsonNode.Parse(File.ReadAllText(SchedulerFixture.ConfigPath))!.AsObject();
                config[key] = JsonNode.Parse(value);
                var error = Record.Exception(() => Run(kind, config.ToJsonString()));
                if (error is not null and not (InvalidModelFileException or InvalidOptionsException))
                    failures.Add($"{key} = {value}: {error.GetType().Name}: {error.Message.Split('\n')[0]}");
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    private static void Run(SchedulerKind kind, string json)
    {
        using var scope = torch.NewDisposeScope();
        using var scheduler = SchedulerFactory.Create(kind, SchedulerConfig.FromJson(json, "odd config"));
        using var generator = new torch.Generator().manual_seed(1);
        for (int steps = 1; steps <= 3; steps++)
        {
            scheduler.SetTimesteps(steps);
            var sample = torch.ones(1, 4, 2, 2) * scheduler.InitNoiseSigma;
            for (int i = 0; i < scheduler.StepCount; i++)
            {
                var input = scheduler.ScaleModelInput(sample, i);
                sample = scheduler.Step(input * 0.1, i, sample, generator).PrevSample;
            }
        }
    }
}
