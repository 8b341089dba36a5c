using StableLora.IO;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace StableLora.Tests.Schedulers;

/// <summary>Shared helpers for the scheduler tests: the fixture's config, its fake model and difference reporting.</summary>
internal static class SchedulerFixture
{
    public static string ConfigPath => Path.Combine(FixturePaths.TinyPipeline, "scheduler", "scheduler_config.json");

    public static SchedulerConfig Sd15Config() => SchedulerConfig.FromFile(ConfigPath);

    /// <summary>The fixture's fake UNet: 0.1 * input + 0.05 * cos(float(t) / 100), the cosine in float64 added as a scalar.</summary>
    public static torch.Tensor FakeModel(torch.Tensor modelInput, torch.Tensor timestep)
    {
        double t = timestep.to(torch.float64).item<double>();
        return modelInput * 0.1 + 0.05 * Math.Cos(t / 100.0);
    }

    public static SafetensorsReader Open(string file) => SafetensorsReader.Open(FixturePaths.Expected(file));

    /// <summary>Checks <paramref name="actual"/> against the tolerance and returns its max |diff| and the largest share of the tolerance used.</summary>
    public static (double MaxDiff, double ToleranceUsed) Check(torch.Tensor expected, torch.Tensor actual, Tolerance tolerance, string label)
    {
        TensorAssert.Close(expected, actual, tolerance, label);
        using var scope = torch.NewDisposeScope();
        var e = expected.to(torch.float64);
        var difference = (actual.to(torch.float64) - e).abs();
        var used = difference / (tolerance.Abs + tolerance.Rel * e.abs());
        return (difference.max().item<double>(), used.max().item<double>());
    }

    public static void AssertBitEqual(torch.Tensor expected, torch.Tensor actual, string label)
    {
        if (!TensorAssert.BitEqual(expected, actual))
            throw new XunitException($"{label}: not bit-identical (dtype {expected.dtype} vs {actual.dtype}, max |diff| {TensorAssert.MaxAbsDiff(expected, actual):G6})");
    }
}

/// <summary>Running maxima of |diff| per quantity, written to the test output.</summary>
internal sealed class DiffReport(ITestOutputHelper output, string title)
{
    private readonly Dictionary<string, double> _max = [];
    private double _toleranceUsed;

    public void Add(string quantity, (double MaxDiff, double ToleranceUsed) check)
    {
        _max[quantity] = Math.Max(_max.GetValueOrDefault(quantity), check.MaxDiff);
        _toleranceUsed = Math.Max(_toleranceUsed, check.ToleranceUsed);
    }

    public void AddExact(string quantity) => _max[quantity] = _max.GetValueOrDefault(quantity);

    public void Write() =>
        output.WriteLine($"{title}: " + string.Join(", ", _max.Select(kv => $"{kv.Key} {kv.Value:G3}")) +
            $" (max |diff|; at most {_toleranceUsed:P1} of the tolerance used)");
}
