namespace StableLora.Schedulers;

/// <summary>What the model predicts (<c>prediction_type</c>).</summary>
internal enum PredictionType
{
    Epsilon,
    VPrediction,
    Sample,
}

/// <summary>How inference timesteps are laid out over the training range (<c>timestep_spacing</c>).</summary>
internal enum TimestepSpacing
{
    Leading,
    Trailing,
    Linspace,
}

/// <summary>
/// Resolves the config keys shared by several scheduler classes to typed values, applying the reading class's
/// default for absent keys and refusing values that class does not support.
/// </summary>
internal static class ConfigValues
{
    public static int NumTrainTimesteps(SchedulerConfig config)
    {
        int value = config.NumTrainTimesteps ?? 1000;
        if (value < 2)
            throw config.Unsupported("num_train_timesteps", value, "at least 2 training timesteps are needed");
        return value;
    }

    public static int StepsOffset(SchedulerConfig config)
    {
        int value = config.StepsOffset ?? 0;
        if (value < 0)
            throw config.Unsupported("steps_offset", value, "the offset must not be negative");
        return value;
    }

    public static TimestepSpacing Spacing(SchedulerConfig config, TimestepSpacing classDefault) => config.TimestepSpacing switch
    {
        null => classDefault,
        "leading" => TimestepSpacing.Leading,
        "trailing" => TimestepSpacing.Trailing,
        "linspace" => TimestepSpacing.Linspace,
        var other => throw config.Unsupported("timestep_spacing", other, "expected 'leading', 'trailing' or 'linspace'"),
    };

    /// <summary>The prediction type (default epsilon) if <paramref name="supported"/> by the reading class.</summary>
    public static PredictionType Prediction(SchedulerConfig config, string className, params PredictionType[] supported)
    {
        PredictionType? parsed = config.PredictionType switch
        {
            null or "epsilon" => PredictionType.Epsilon,
            "v_prediction" => PredictionType.VPrediction,
            "sample" => PredictionType.Sample,
            _ => null,
        };
        if (parsed is null || !supported.Contains(parsed.Value))
        {
            string names = string.Join(", ", supported.Select(Name));
            throw config.Unsupported("prediction_type", config.PredictionType, $"{className} supports {names}");
        }
        return parsed.Value;
    }

    /// <summary>Dynamic thresholding (pixel-space models only) is not implemented.</summary>
    public static void RejectThresholding(SchedulerConfig config)
    {
        if (config.Thresholding == true)
            throw config.Unsupported("thresholding", true, "dynamic thresholding is not implemented (it is meant for pixel-space models, not Stable Diffusion latents)");
    }

    private static string Name(PredictionType type) => type switch
    {
        PredictionType.Epsilon => "'epsilon'",
        PredictionType.VPrediction => "'v_prediction'",
        _ => "'sample'",
    };
}
