using System.CommandLine;
using System.Globalization;

namespace StableLora.Samples.Cli;

/// <summary>Option construction and value parsing shared by the verbs.</summary>
internal static class Parsing
{
    public static Option<T> Option<T>(string name, string description, params string[] aliases) =>
        new(name, aliases) { Description = description };

    /// <summary>Parses <c>FILE[:SCALE]</c>; the scale is taken only when what follows the last ':' is a number (paths may hold ':').</summary>
    /// <summary><c>FILE</c>, <c>FILE:UNET</c> or <c>FILE:UNET:TE</c> (a path may itself hold colons: only trailing numbers are weights).</summary>
    public static (string Path, double Unet, double? TextEncoder) LoraSpec(string text)
    {
        var weights = new List<double>();
        string path = text;
        while (weights.Count < 2)
        {
            int colon = path.LastIndexOf(':');
            if (colon <= 0 || !double.TryParse(path.AsSpan(colon + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out double weight))
                break;
            weights.Insert(0, weight);
            path = path[..colon];
        }

        return weights.Count switch
        {
            0 => (text, 1.0, null),
            1 => (path, weights[0], null),
            _ => (path, weights[0], weights[1]),
        };
    }

    /// <summary><c>--targets</c>: <c>attention</c>, <c>kohya</c>, or comma-separated module-path globs.</summary>
    public static (LoraPreset Preset, string[] Patterns) Targets(string text) => text.Trim().ToLowerInvariant() switch
    {
        "attention" => (LoraPreset.Attention, Array.Empty<string>()),
        "kohya" => (LoraPreset.Kohya, Array.Empty<string>()),
        "" => throw new ArgumentException("--targets: expected attention, kohya or module-path patterns"),
        _ => (LoraPreset.Attention, text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)),
    };

    public static MixedPrecision Precision(string text) => text.ToLowerInvariant() switch
    {
        "no" or "fp32" => MixedPrecision.No,
        "fp16" => MixedPrecision.Fp16,
        "bf16" => MixedPrecision.Bf16,
        _ => throw new ArgumentException($"--mixed-precision {text}: expected no, fp16 or bf16"),
    };

    public static LearningRateSchedule LearningRateSchedule(string text) => text.Trim().ToLowerInvariant() switch
    {
        "constant" => StableLora.LearningRateSchedule.Constant,
        "constant_with_warmup" => StableLora.LearningRateSchedule.ConstantWithWarmup,
        "linear" => StableLora.LearningRateSchedule.Linear,
        "cosine" => StableLora.LearningRateSchedule.Cosine,
        "cosine_with_restarts" => StableLora.LearningRateSchedule.CosineWithRestarts,
        "polynomial" => StableLora.LearningRateSchedule.Polynomial,
        _ => throw new ArgumentException($"--lr-scheduler {text}: expected constant, constant_with_warmup, linear, cosine, cosine_with_restarts or polynomial"),
    };

    public static LossType LossType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "l2" => StableLora.LossType.L2,
        "l1" => StableLora.LossType.L1,
        "huber" => StableLora.LossType.Huber,
        "smooth_l1" => StableLora.LossType.SmoothL1,
        _ => throw new ArgumentException($"--loss-type {text}: expected l2, l1, huber or smooth_l1"),
    };

    public static HuberSchedule HuberSchedule(string text) => text.Trim().ToLowerInvariant() switch
    {
        "constant" => StableLora.HuberSchedule.Constant,
        "exponential" => StableLora.HuberSchedule.Exponential,
        "snr" => StableLora.HuberSchedule.Snr,
        _ => throw new ArgumentException($"--huber-schedule {text}: expected constant, exponential or snr"),
    };

    public static NonFiniteLossPolicy NonFinitePolicy(string text) => text.ToLowerInvariant() switch
    {
        "skip" => NonFiniteLossPolicy.SkipStep,
        "stop" => NonFiniteLossPolicy.Stop,
        _ => throw new ArgumentException($"--on-non-finite {text}: expected skip or stop"),
    };

    public static ModelDType DType(string text) => text.ToLowerInvariant() switch
    {
        "fp32" or "float32" => ModelDType.Float32,
        "fp16" or "float16" => ModelDType.Float16,
        "bf16" or "bfloat16" => ModelDType.BFloat16,
        _ => throw new ArgumentException($"--dtype {text}: expected fp32, fp16 or bf16"),
    };

    public static LoraFileFormat Format(string text) => text.ToLowerInvariant() switch
    {
        "pt" => LoraFileFormat.AttnProcs,
        "kohya" => LoraFileFormat.Kohya,
        "peft" => LoraFileFormat.Peft,
        _ => throw new ArgumentException($"--format {text}: expected pt, kohya or peft (a LoRA), or single-file or diffusers (a model)"),
    };
}
