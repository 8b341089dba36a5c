using System.Text.Json;
using StableLora.Benchmarks;

namespace StableLora.Tests.Benchmarks;

/// <summary>The bench harness end to end on the tiny architecture: every mode runs, and the report adds up.</summary>
public sealed class LoraBenchmarkTests
{
    [Fact]
    public void EveryTrainingModeRunsAndTheReportIsConsistent()
    {
        var report = LoraBenchmark.Run(new BenchmarkOptions
        {
            Architecture = BenchmarkArchitecture.Tiny,
            Device = "cpu",
            BatchSizes = new[] { 2 },
            Resolution = 32,
            Modes = new[] { "unet", "full", "unet+gc" },
            Warmup = 0,
            Iterations = 2,
            Vae = true,
            PeakTflops = 1.0,
        });

        Assert.Equal(new[] { "train-unet", "train-full", "train-unet+gc" }, report.Measurements.Take(3).Select(m => m.Task));
        Assert.All(report.Measurements, m =>
        {
            Assert.Null(m.Error);
            Assert.True(m.MinMs > 0 && m.MinMs <= m.MedianMs && m.MedianMs <= m.MaxMs, m.Task);
            Assert.Equal(m.BatchSize * 1000.0 / m.MedianMs, m.ImagesPerSecond, 6);
            Assert.True(m.PeakMemoryBytes > 0, m.Task);
        });
        var byTask = report.Measurements.ToDictionary(m => m.Task);
        double unetFlops = byTask["train-unet"].FlopsPerRepetition!.Value;
        Assert.True(unetFlops > 0);
        Assert.True(byTask["train-full"].FlopsPerRepetition > unetFlops, "the full step adds the VAE encoder and text encoder");
        Assert.Equal(unetFlops, byTask["train-unet+gc"].FlopsPerRepetition); // model FLOPs: recomputation is not counted
        Assert.Equal(unetFlops / byTask["train-unet"].MedianMs / 1e9, byTask["train-unet"].AchievedTflops!.Value, 9);

        var roundTrip = JsonSerializer.Deserialize<BenchmarkReport>(report.ToJson())!;
        Assert.Equal(report.Measurements, roundTrip.Measurements);
        string table = report.ToMarkdown();
        Assert.All(report.Measurements, m => Assert.Contains($"| {m.Task} |", table, StringComparison.Ordinal));
    }
}
