using System.Globalization;
using StableLora.Data;
using StableLora.Tests.Infrastructure;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace StableLora.Tests.Reliability;

/// <summary>
/// A long tiny run (300 steps here; 3,000 with <c>STABLELORA_LONG_SOAK=1</c>) with checkpoints and pruning, sampling
/// after every step the live tensor count, the process's resident memory and (every 10 steps, after a full
/// collection) the managed heap. After a 50-step warm-up none of them may grow. <c>STABLELORA_SOAK_CSV=path</c>
/// writes the samples (tools/plot_soak.py turns them into the figure in docs/reliability.md).
/// </summary>
public sealed class SoakTests(ITestOutputHelper output)
{
    private const int WarmupSteps = 50;

    [Fact]
    public async Task MemoryStaysFlatOverAFewHundredStepsWithCheckpointsAndPruning()
    {
        bool longRun = Environment.GetEnvironmentVariable("STABLELORA_LONG_SOAK") == "1";
        int steps = longRun ? 3000 : 300;
        using var temp = new TempDirectory();
        string data = temp.File("data");
        SketchImageGenerator.Generate(data, count: 6, size: 24, seed: 4);
        var samples = new List<Sample>();
        await LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(data)
            .WithResolution(16)
            .WithBatchSize(2)
            .WithMaxSteps(steps)
            .WithWarmupSteps(10)
            .WithCheckpointEvery(50, keepLast: 2)
            .WithDevice("cpu")
            .WithOutputDirectory(temp.File("output"))
            .WithObserver(new Sampler(samples))
            .Build()
            .TrainAsync();

        if (Environment.GetEnvironmentVariable("STABLELORA_SOAK_CSV") is { Length: > 0 } csv)
            File.WriteAllLines(csv, new[] { "step,live_tensors,rss_mib,managed_mib" }
                .Concat(samples.Select(s => string.Create(CultureInfo.InvariantCulture, $"{s.Step},{s.LiveTensors},{s.RssMiB:F2},{s.ManagedMiB:F3}"))));

        var steady = samples.Where(s => s.Step > WarmupSteps).ToList();
        var early = steady.Take(50).ToList();
        var late = steady.TakeLast(50).ToList();
        double rssGrowth = Median(late.Select(s => s.RssMiB)) - Median(early.Select(s => s.RssMiB));
        var managed = steady.Where(s => !double.IsNaN(s.ManagedMiB)).ToList();
        double managedGrowth = managed.TakeLast(5).Average(s => s.ManagedMiB) - managed.Take(5).Average(s => s.ManagedMiB);
        output.WriteLine($"{steps} steps; after step {WarmupSteps}: live tensors {steady.Min(s => s.LiveTensors)}-{steady.Max(s => s.LiveTensors)}, "
                         + $"RSS {steady.Min(s => s.RssMiB):F1}-{steady.Max(s => s.RssMiB):F1} MiB (median of the last 50 minus the first 50: {rssGrowth:+0.0;-0.0} MiB), "
                         + $"managed heap {managed.Min(s => s.ManagedMiB):F2}-{managed.Max(s => s.ManagedMiB):F2} MiB ({managedGrowth:+0.00;-0.00} MiB)");

        Assert.Equal(steps, samples.Count);
        Assert.InRange(steady.Max(s => s.LiveTensors) - steady.Min(s => s.LiveTensors), 0, 10);
        // One leaked activation of this model is about 0.1 MiB a step: 250 steps of it would be 25 MiB.
        Assert.True(rssGrowth < 8, $"resident memory grew by {rssGrowth:F1} MiB between steps {WarmupSteps}-{WarmupSteps + 50} and the last 50");
        Assert.True(managedGrowth < 1, $"the managed heap grew by {managedGrowth:F2} MiB");
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.OrderBy(v => v).ToList();
        return sorted[sorted.Count / 2];
    }

    private readonly record struct Sample(long Step, long LiveTensors, double RssMiB, double ManagedMiB);

    private sealed class Sampler(List<Sample> samples) : ITrainingObserver
    {
        public ValueTask OnStepCompletedAsync(StepCompletedEvent e)
        {
            double managed = double.NaN;
            if (e.Progress.Step % 10 == 0)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                managed = GC.GetTotalMemory(forceFullCollection: false) / 1048576.0;
            }

            samples.Add(new Sample(e.Progress.Step, Tensor.TotalCount, ResidentMiB(), managed));
            return ValueTask.CompletedTask;
        }

        private static double ResidentMiB()
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
            }

            return double.NaN;
        }
    }
}
