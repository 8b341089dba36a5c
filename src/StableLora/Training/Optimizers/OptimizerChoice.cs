using System.Globalization;
using TorchSharp.Modules;

namespace StableLora.Training;

/// <summary>
/// The optimizer names and arguments as sd-scripts spells them (<c>--optimizer_type</c>, <c>--optimizer_args key=value</c>):
/// parsing and checking them, building the optimizer, and kohya's <c>ss_optimizer</c> metadata.
/// </summary>
internal static class OptimizerChoice
{
    /// <summary>The supported choices, as the command line names them.</summary>
    public const string Supported = "adamw, prodigy, adafactor, lion or sgd";

    private static readonly string[] BitsAndBytesNames =
    {
        "adamw8bit", "adam8bit", "pagedadamw", "pagedadamw8bit", "pagedadamw32bit", "lion8bit", "pagedlion8bit", "sgdnesterov8bit",
        "ademamix8bit", "pagedademamix8bit", "adagrad8bit", "rmsprop8bit", "lamb8bit", "lars8bit",
    };

    /// <summary>The argument keys each optimizer takes (the reference implementations' keyword names).</summary>
    public static IReadOnlyList<string> KnownKeys(OptimizerType type) => type switch
    {
        OptimizerType.AdamW => new[] { "betas", "eps", "weight_decay" },
        OptimizerType.Prodigy => new[] { "betas", "beta3", "eps", "weight_decay", "decouple", "use_bias_correction", "safeguard_warmup", "d0", "d_coef", "growth_rate" },
        OptimizerType.Adafactor => new[] { "eps", "clip_threshold", "decay_rate", "beta1", "weight_decay", "scale_parameter", "relative_step", "warmup_init" },
        OptimizerType.Lion => new[] { "betas", "weight_decay" },
        OptimizerType.Sgd => new[] { "momentum", "weight_decay" },
        _ => Array.Empty<string>(),
    };

    /// <summary>
    /// An optimizer name (ours or sd-scripts', any case: <c>adamw</c>, <c>Prodigy</c>, <c>SGDNesterov</c>, ...); false with a
    /// one-line <paramref name="error"/> for bitsandbytes optimizers and unknown names.
    /// </summary>
    public static bool TryParseName(string name, out OptimizerType type, out string error)
    {
        type = OptimizerType.AdamW;
        error = "";
        string key = name.Trim().Replace("_", "", StringComparison.Ordinal).Replace("-", "", StringComparison.Ordinal).ToLowerInvariant();
        switch (key)
        {
            case "adamw":
                type = OptimizerType.AdamW;
                return true;
            case "prodigy":
                type = OptimizerType.Prodigy;
                return true;
            case "adafactor":
                type = OptimizerType.Adafactor;
                return true;
            case "lion":
                type = OptimizerType.Lion;
                return true;
            case "sgd":
            case "sgdnesterov":
                type = OptimizerType.Sgd;
                return true;
        }

        error = BitsAndBytesNames.Contains(key) || key.StartsWith("bnb", StringComparison.Ordinal) || key.Contains("8bit", StringComparison.Ordinal)
            ? $"optimizer '{name}' is a bitsandbytes optimizer, which is not supported (there is no .NET port of bitsandbytes, and a LoRA's optimizer state is only a few MB); use {Supported}"
            : $"unknown optimizer '{name}'; expected {Supported}";
        return false;
    }

    /// <summary>Command-line <c>key=value</c> pairs as a dictionary (values as written); throws <see cref="FormatException"/> naming a malformed pair.</summary>
    public static IReadOnlyDictionary<string, string> ParsePairs(IEnumerable<string> pairs)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in pairs)
        {
            int equals = pair.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0 || equals == pair.Length - 1)
                throw new FormatException($"optimizer argument '{pair}' is not key=value");
            result[pair[..equals].Trim()] = pair[(equals + 1)..].Trim();
        }

        return result;
    }

    /// <summary>Every problem with the arguments for <paramref name="type"/> (unknown keys, unreadable or out-of-range values).</summary>
    public static IReadOnlyList<string> Problems(OptimizerType type, IReadOnlyDictionary<string, string>? arguments)
    {
        var reader = new ArgumentReader(type, arguments);
        try
        {
            _ = Settings(type, reader);
        }
        catch (ArgumentException e)
        {
            reader.Errors.Add(e.Message);
        }

        reader.CheckUnknown();
        return reader.Errors;
    }

    /// <summary>Whether Adafactor computes its own learning rate (relative_step, its default).</summary>
    public static bool OwnLearningRate(OptimizerType type, IReadOnlyDictionary<string, string>? arguments) =>
        type == OptimizerType.Adafactor && Settings(type, new ArgumentReader(type, arguments)) is AdafactorSettings { RelativeStep: true };

    /// <summary>Builds the optimizer over the parameter groups (arguments already checked).</summary>
    public static ILoraOptimizer Create(OptimizerType type, IReadOnlyDictionary<string, string>? arguments,
        IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups)
    {
        var reader = new ArgumentReader(type, arguments);
        var settings = Settings(type, reader);
        reader.CheckUnknown();
        if (reader.Errors.Count > 0)
            throw new InvalidOptionsException(nameof(LoraTrainingOptions.OptimizerArguments), null, reader.Errors[0]);
        return settings switch
        {
            AdamWSettings adamW => new AdamWOptimizer(groups, adamW),
            ProdigySettings prodigy => new ProdigyOptimizer(groups, prodigy),
            AdafactorSettings adafactor => new AdafactorOptimizer(groups, adafactor),
            LionSettings lion => new LionOptimizer(groups, lion),
            SgdSettings sgd => new SgdOptimizer(groups, sgd),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown optimizer"),
        };
    }

    /// <summary>
    /// sd-scripts' <c>ss_optimizer</c>: the optimizer class's module path and name, then the arguments as
    /// <c>(key=value,...)</c> (Python's str of each value) when there are any. Like sd-scripts, SGD records the momentum
    /// it defaults to and Adafactor the relative_step it defaults to.
    /// </summary>
    public static string KohyaName(OptimizerType type, IReadOnlyDictionary<string, string>? arguments)
    {
        string name = type switch
        {
            OptimizerType.Prodigy => "prodigyopt.prodigy.Prodigy",
            OptimizerType.Adafactor => "transformers.optimization.Adafactor",
            OptimizerType.Lion => "lion_pytorch.lion_pytorch.Lion",
            OptimizerType.Sgd => "torch.optim.sgd.SGD",
            _ => "torch.optim.adamw.AdamW",
        };
        var pairs = (arguments ?? new Dictionary<string, string>()).Select(a => (a.Key, Value: PythonValue(a.Value))).ToList();
        if (type == OptimizerType.Sgd && pairs.All(p => p.Key != "momentum"))
            pairs.Add(("momentum", "0.9"));
        if (type == OptimizerType.Adafactor && pairs.All(p => p.Key != "relative_step"))
            pairs.Add(("relative_step", "True"));
        return pairs.Count == 0 ? name : $"{name}({string.Join(",", pairs.Select(p => $"{p.Key}={p.Value}"))})";
    }

    private static object Settings(OptimizerType type, ArgumentReader a)
    {
        switch (type)
        {
            case OptimizerType.AdamW:
            {
                var d = new AdamWSettings();
                var (b1, b2) = a.Pair("betas", (d.Beta1, d.Beta2));
                a.Check(b1 is >= 0 and < 1 && b2 is >= 0 and < 1, "betas", "both must be in [0, 1)");
                double eps = a.Double("eps", d.Eps);
                a.Check(eps > 0, "eps", "must be positive");
                double wd = a.Double("weight_decay", d.WeightDecay);
                a.Check(wd >= 0, "weight_decay", "must not be negative");
                return new AdamWSettings(b1, b2, wd, eps);
            }

            case OptimizerType.Prodigy:
            {
                var d = new ProdigySettings();
                var (b1, b2) = a.Pair("betas", (d.Beta1, d.Beta2));
                a.Check(b1 is >= 0 and < 1 && b2 is >= 0 and < 1, "betas", "both must be in [0, 1)");
                double? b3 = a.OptionalDouble("beta3", d.Beta3);
                a.Check(b3 is null or >= 0 and <= 1, "beta3", "must be in [0, 1]");
                double eps = a.Double("eps", d.Eps);
                a.Check(eps > 0, "eps", "must be positive");
                double wd = a.Double("weight_decay", d.WeightDecay);
                a.Check(wd >= 0, "weight_decay", "must not be negative");
                double d0 = a.Double("d0", d.D0);
                a.Check(d0 > 0, "d0", "must be positive");
                double dCoef = a.Double("d_coef", d.DCoef);
                a.Check(dCoef > 0, "d_coef", "must be positive");
                double growth = a.Double("growth_rate", d.GrowthRate);
                a.Check(growth >= 1, "growth_rate", "must be at least 1 (inf: unbounded)");
                return new ProdigySettings(b1, b2, b3, eps, wd, a.Bool("decouple", d.Decouple), a.Bool("use_bias_correction", d.UseBiasCorrection),
                    a.Bool("safeguard_warmup", d.SafeguardWarmup), d0, dCoef, growth);
            }

            case OptimizerType.Adafactor:
            {
                var d = new AdafactorSettings();
                var (eps1, eps2) = a.Pair("eps", (d.Eps1, d.Eps2));
                a.Check(eps1 > 0 && eps2 > 0, "eps", "both must be positive");
                double clip = a.Double("clip_threshold", d.ClipThreshold);
                a.Check(clip > 0, "clip_threshold", "must be positive");
                double decay = a.Double("decay_rate", d.DecayRate);
                a.Check(decay < 0, "decay_rate", "must be negative (the second-moment decay is 1 - step^decay_rate)");
                double? beta1 = a.OptionalDouble("beta1", d.Beta1);
                a.Check(beta1 is null or >= 0 and < 1, "beta1", "must be in [0, 1) or None");
                double wd = a.Double("weight_decay", d.WeightDecay);
                a.Check(wd >= 0, "weight_decay", "must not be negative");
                bool relative = a.Bool("relative_step", d.RelativeStep);
                bool warmup = a.Bool("warmup_init", d.WarmupInit);
                a.Check(!warmup || relative, "warmup_init", "needs relative_step=True");
                return new AdafactorSettings(eps1, eps2, clip, decay, beta1, wd, a.Bool("scale_parameter", d.ScaleParameter), relative, warmup);
            }

            case OptimizerType.Lion:
            {
                var d = new LionSettings();
                var (b1, b2) = a.Pair("betas", (d.Beta1, d.Beta2));
                a.Check(b1 is >= 0 and <= 1 && b2 is >= 0 and <= 1, "betas", "both must be in [0, 1]");
                double wd = a.Double("weight_decay", d.WeightDecay);
                a.Check(wd >= 0, "weight_decay", "must not be negative");
                return new LionSettings(b1, b2, wd);
            }

            case OptimizerType.Sgd:
            {
                var d = new SgdSettings();
                double momentum = a.Double("momentum", d.Momentum);
                a.Check(momentum > 0, "momentum", "must be positive (Nesterov momentum needs one)");
                double wd = a.Double("weight_decay", d.WeightDecay);
                a.Check(wd >= 0, "weight_decay", "must not be negative");
                return new SgdSettings(momentum, wd);
            }

            default:
                throw new ArgumentException($"unknown optimizer {type}");
        }
    }

    /// <summary>A value as Python's str of sd-scripts' <c>ast.literal_eval</c> gives it: True/False, None, ints, float reprs, tuples.</summary>
    private static string PythonValue(string text)
    {
        string t = text.Trim();
        if (ArgumentReader.TryBool(t, out bool b))
            return b ? "True" : "False";
        if (t.Equals("None", StringComparison.OrdinalIgnoreCase))
            return "None";
        if (long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long integer))
            return integer.ToString(CultureInfo.InvariantCulture);
        if (ArgumentReader.TryDouble(t, out double value))
            return IO.PythonFloats.Repr(value);
        var parts = ArgumentReader.SplitTuple(t);
        if (parts.Length > 1)
            return "(" + string.Join(", ", parts.Select(PythonValue)) + ")";
        return t;
    }

    /// <summary>Reads typed values from the string arguments, collecting one error per bad key.</summary>
    private sealed class ArgumentReader(OptimizerType type, IReadOnlyDictionary<string, string>? arguments)
    {
        private readonly HashSet<string> _read = new(StringComparer.Ordinal);

        public List<string> Errors { get; } = new();

        public static bool TryBool(string text, out bool value)
        {
            value = text.Equals("true", StringComparison.OrdinalIgnoreCase);
            return value || text.Equals("false", StringComparison.OrdinalIgnoreCase);
        }

        public static bool TryDouble(string text, out double value)
        {
            string t = text.Trim();
            if (t is "inf" or "float('inf')" or "float(\"inf\")" or "Infinity")
            {
                value = double.PositiveInfinity;
                return true;
            }

            return double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && double.IsFinite(value);
        }

        public static string[] SplitTuple(string text)
        {
            string t = text.Trim();
            if ((t.StartsWith('(') && t.EndsWith(')')) || (t.StartsWith('[') && t.EndsWith(']')))
                t = t[1..^1];
            return t.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        }

        public void Check(bool ok, string key, string message)
        {
            if (!ok && arguments is not null && arguments.ContainsKey(key))
                Errors.Add($"{Name} argument {key}={arguments[key]}: {message}");
        }

        public double Double(string key, double fallback)
        {
            if (Text(key) is not { } text)
                return fallback;
            if (TryDouble(text, out double value))
                return value;
            Errors.Add($"{Name} argument {key}={text}: expected a number");
            return fallback;
        }

        public double? OptionalDouble(string key, double? fallback)
        {
            if (Text(key) is not { } text)
                return fallback;
            if (text.Equals("None", StringComparison.OrdinalIgnoreCase))
                return null;
            return Double(key, fallback ?? 0);
        }

        public bool Bool(string key, bool fallback)
        {
            if (Text(key) is not { } text)
                return fallback;
            if (TryBool(text, out bool value))
                return value;
            Errors.Add($"{Name} argument {key}={text}: expected True or False");
            return fallback;
        }

        public (double, double) Pair(string key, (double, double) fallback)
        {
            if (Text(key) is not { } text)
                return fallback;
            var parts = SplitTuple(text);
            if (parts.Length == 2 && TryDouble(parts[0], out double first) && TryDouble(parts[1], out double second))
                return (first, second);
            Errors.Add($"{Name} argument {key}={text}: expected two numbers, such as 0.9,0.999");
            return fallback;
        }

        public void CheckUnknown()
        {
            foreach (string key in (arguments?.Keys ?? Enumerable.Empty<string>()).Where(k => !_read.Contains(k)))
                Errors.Add($"unknown {Name} argument '{key}'; known: {string.Join(", ", KnownKeys(type))}");
        }

        private string Name => type.ToString();

        private string? Text(string key)
        {
            _read.Add(key);
            return arguments is not null && arguments.TryGetValue(key, out var text) ? text : null;
        }
    }
}
