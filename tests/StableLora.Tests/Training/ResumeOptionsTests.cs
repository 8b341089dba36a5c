using Microsoft.Extensions.Logging;
using StableLora.Data;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Training;

/// <summary>Resuming reads the checkpoint's options.json back and warns about options that changed (issue 16, internal structure).</summary>
public sealed class ResumeOptionsTests
{
    [Fact]
    public async Task AResumeWithChangedOptionsNamesThemAndTheScheduleChange()
    {
        using var temp = new TempDirectory();
        SketchImageGenerator.Generate(temp.File("sketches"), count: 2, size: 24, seed: 1);
        LoraTrainingBuilder Run(int maxSteps, ListLogger logger) => LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = temp.File("sketches"), OutputDirectory = temp.File("out"), Resolution = 16, BatchSize = 2, MaxSteps = maxSteps, WarmupSteps = 0,
                CheckpointEvery = 2, Device = "cpu", Seed = 1,
            })
            .WithLogger(logger);

        await Run(4, new ListLogger()).Build().TrainAsync();
        var same = new ListLogger();
        await Run(4, same).WithResume(temp.File("out/checkpoint-step-2")).Build().TrainAsync();
        Assert.DoesNotContain(same.Entries, e => e.Message.Contains("differ from the run", StringComparison.Ordinal));

        var longer = new ListLogger();
        await Run(6, longer).WithCaption("another caption").WithResume(temp.File("out/checkpoint-step-2")).Build().TrainAsync();
        var warning = Assert.Single(longer.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("differ from the run", StringComparison.Ordinal));
        Assert.Contains("MaxSteps 4 -> 6 (the learning-rate schedule changes)", warning.Message, StringComparison.Ordinal);
        Assert.Contains("Caption \"a sketch\" -> \"another caption\"", warning.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("ResumeFrom", warning.Message, StringComparison.Ordinal);
    }
}
