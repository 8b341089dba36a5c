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
    public static SchedulerConfig FromFile(string path)
    {
        string json;
        try
        {
            json = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidModelFileException(path, null, $"cannot read the scheduler config: {e.Message}", e);
        }
        return FromJson(json, path);
    }

    /// <summary>Parses scheduler config JSON; <paramref name="sourceName"/> names it in error messages.</summary>
    public static SchedulerConfig FromJson(string json, string sourceName)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(
                PythonJson.QuoteNonFiniteLiterals(json),
                new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(sourceName, null, $"the scheduler config is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(sourceName, null, "the scheduler config is not a JSON object");
            var keys = new JsonKeys(document.RootElement, sourceName);
            return new SchedulerConfig
            {
                Source = sourceName,
                ClassName = keys.String("_class_name"),
                NumTrainTimesteps = keys.Int("num_train_timesteps"),
                BetaStart = keys.Double("beta_start"),
                BetaEnd = keys.Double("beta_end"),
                BetaSchedule = keys.String("beta_schedule"),
                TrainedBetas = keys.DoubleList("trained_betas"),
                StepsOffset = keys.Int("steps_offset"),
                TimestepSpacing = keys.String("timestep_spacing"),
                PredictionType = keys.String("prediction_type"),
                ClipSample = keys.Bool("clip_sample"),
                ClipSampleRange = keys.Double("clip_sample_range"),
                SetAlphaToOne = keys.Bool("set_alpha_to_one"),
                SkipPrkSteps = keys.Bool("skip_prk_steps"),
                Thresholding = keys.Bool("thresholding"),
                RescaleBetasZeroSnr = keys.Bool("rescale_betas_zero_snr"),
                VarianceType = keys.String("variance_type"),
                UseKarrasSigmas = keys.Bool("use_karras_sigmas"),
                InterpolationType = keys.String("interpolation_type"),
                SolverOrder = keys.Int("solver_order"),
                AlgorithmType = keys.String("algorithm_type"),
                SolverType = keys.String("solver_type"),
                LowerOrderFinal = keys.Bool("lower_order_final"),
                LambdaMinClipped = keys.Double("lambda_min_clipped"),
            };
        }
    }

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
