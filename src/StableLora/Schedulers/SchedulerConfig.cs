using StableLora.Configuration;
using System.Text.Json;

namespace StableLora.Schedulers;

/// <summary>
/// The keys of a diffusers <c>scheduler_config.json</c> that the six supported scheduler classes read. A key that is
/// absent from the file (or JSON null) stays <see langword="null"/>, so that each scheduler class applies its own
/// default exactly as diffusers' <c>from_config</c> does (e.g. <c>timestep_spacing</c> is 'leading' for DDIM/PNDM/DDPM
/// but 'linspace' for Euler/DPM-Solver). Unknown keys are ignored. Overrides are written with <c>with</c>, like the
/// keyword arguments of <c>from_config</c>.
/// </summary>
internal sealed record SchedulerConfig
{
    /// <summary>Where the config came from (a file path or a description), used in error messages.</summary>
    public string Source { get; init; } = "scheduler config";

    /// <summary><c>_class_name</c>: the diffusers class that wrote the file.</summary>
    public string? ClassName { get; init; }

    public int? NumTrainTimesteps { get; init; }
    public double? BetaStart { get; init; }
    public double? BetaEnd { get; init; }
    public string? BetaSchedule { get; init; }
    public IReadOnlyList<double>? TrainedBetas { get; init; }
    public int? StepsOffset { get; init; }
    public string? TimestepSpacing { get; init; }
    public string? PredictionType { get; init; }
    public bool? ClipSample { get; init; }
    public double? ClipSampleRange { get; init; }
    public bool? SetAlphaToOne { get; init; }
    public bool? SkipPrkSteps { get; init; }
    public bool? Thresholding { get; init; }
    public bool? RescaleBetasZeroSnr { get; init; }
    public string? VarianceType { get; init; }
    public bool? UseKarrasSigmas { get; init; }
    public string? InterpolationType { get; init; }
    public int? SolverOrder { get; init; }
    public string? AlgorithmType { get; init; }
    public string? SolverType { get; init; }
    public bool? LowerOrderFinal { get; init; }
    public double? LambdaMinClipped { get; init; }

    /// <summary>Reads a <c>scheduler_config.json</c>.</summary>
    public static SchedulerConfig FromFile(string path) => From(ConfigReader.FromFile(path, What));

    /// <summary>Parses scheduler config JSON; <paramref name="sourceName"/> names it in error messages.</summary>
    public static SchedulerConfig FromJson(string json, string sourceName) => From(ConfigReader.FromJson(json, sourceName, What));

    private const string What = "scheduler config";

    private static SchedulerConfig From(ConfigReader keys) => new()
    {
        Source = keys.Source,
        ClassName = keys.NullableString("_class_name"),
        NumTrainTimesteps = keys.NullableInt("num_train_timesteps"),
        BetaStart = keys.NullableDouble("beta_start"),
        BetaEnd = keys.NullableDouble("beta_end"),
        BetaSchedule = keys.NullableString("beta_schedule"),
        TrainedBetas = keys.NullableDoubleList("trained_betas"),
        StepsOffset = keys.NullableInt("steps_offset"),
        TimestepSpacing = keys.NullableString("timestep_spacing"),
        PredictionType = keys.NullableString("prediction_type"),
        ClipSample = keys.NullableBool("clip_sample"),
        ClipSampleRange = keys.NullableDouble("clip_sample_range"),
        SetAlphaToOne = keys.NullableBool("set_alpha_to_one"),
        SkipPrkSteps = keys.NullableBool("skip_prk_steps"),
        Thresholding = keys.NullableBool("thresholding"),
        RescaleBetasZeroSnr = keys.NullableBool("rescale_betas_zero_snr"),
        VarianceType = keys.NullableString("variance_type"),
        UseKarrasSigmas = keys.NullableBool("use_karras_sigmas"),
        InterpolationType = keys.NullableString("interpolation_type"),
        SolverOrder = keys.NullableInt("solver_order"),
        AlgorithmType = keys.NullableString("algorithm_type"),
        SolverType = keys.NullableString("solver_type"),
        LowerOrderFinal = keys.NullableBool("lower_order_final"),
        LambdaMinClipped = keys.NullableDouble("lambda_min_clipped"),
    };

    /// <summary>The error for a value of <paramref name="key"/> that a scheduler does not support.</summary>
    public ModelConfigException Unsupported(string key, object? value, string message) =>
        new(Source, key, FormatValue(value), message);

    private static string? FormatValue(object? value) => value switch
    {
        null => null,
        string text => $"'{text}'",
        bool flag => flag ? "true" : "false",
        double number => number.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture),
    };
}
