using StableLora.Advanced;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Generation;

/// <summary>
/// Generation at the edges on the tiny fixture pipeline: every scheduler with 1, 2 and 3 steps, with and without the
/// fixture LoRA; progress that counts UNet evaluations honestly; and bad options refused with
/// <see cref="InvalidOptionsException"/> naming the option, never an internal .NET exception.
/// </summary>
public sealed class EdgeCaseGenerationTests
{
    private static readonly string Lora = Path.Combine(FixturePaths.TinySd, "lora_weights.pt");

    public static TheoryData<SchedulerKind, bool> SchedulersWithAndWithoutLora()
    {
        var data = new TheoryData<SchedulerKind, bool>();
        foreach (var kind in Enum.GetValues<SchedulerKind>())
        {
            data.Add(kind, false);
            data.Add(kind, true);
        }
        return data;
    }

    /// <summary>UNet evaluations diffusers makes for 1, 2, 3 steps: PLMS evaluates its second timestep twice.</summary>
    private static int ExpectedEvaluations(SchedulerKind kind, int steps) => kind == SchedulerKind.Pndm && steps >= 2 ? steps + 1 : steps;

    [Theory]
    [MemberData(nameof(SchedulersWithAndWithoutLora))]
    public void OneTwoAndThreeStepsGiveFiniteImagesAndProgressEndsAtItsTotal(SchedulerKind kind, bool withLora)
    {
        var builder = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(kind).WithDevice("cpu");
        if (withLora)
            builder.WithLora(Lora);
        using var generator = builder.Build();
        for (int steps = 1; steps <= 3; steps++)
        {
            using var scope = NewDisposeScope();
            var reports = new List<GenerationProgress>();
            using var result = generator.Generate("a photo of a cat", new GenerationOptions { Steps = steps, Seed = 7, NegativePrompt = "blurry" },
                new SynchronousProgress<GenerationProgress>(reports.Add));

            Assert.True(result.ImageTensor.isfinite().all().item<bool>(), $"{kind} {steps} steps: the image is not finite");
            int total = ExpectedEvaluations(kind, steps);
            Assert.Equal(total, generator.ModelEvaluationCount(steps));
            Assert.Equal(Enumerable.Range(1, total), reports.Select(r => r.Step));
            Assert.All(reports, r => Assert.Equal(total, r.TotalSteps));
            Assert.Equal(steps, result.Parameters.Steps);
        }
    }

    [Fact]
    public void PndmWithRungeKuttaStepsCountsItsWarmUpEvaluationsAndRefusesFewerThanFourSteps()
    {
        using var copy = new FixturePipelineCopy();
        string configPath = Path.Combine(copy.Component("scheduler"), "scheduler_config.json");
        File.WriteAllText(configPath, File.ReadAllText(configPath).Replace("\"skip_prk_steps\": true", "\"skip_prk_steps\": false", StringComparison.Ordinal));
        using var generator = StableDiffusionGenerator.FromPretrained(copy.Directory).WithDevice("cpu").Build();
        Assert.Equal(SchedulerKind.Pndm, generator.Scheduler);

        var error = Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", new GenerationOptions { Steps = 3, Seed = 1 }));
        Assert.Equal("Steps", error.Errors.Single().Option);
        Assert.Contains("skip_prk_steps", error.Message, StringComparison.Ordinal);

        var reports = new List<GenerationProgress>();
        using var result = generator.Generate("x", new GenerationOptions { Steps = 4, Seed = 1 }, new SynchronousProgress<GenerationProgress>(reports.Add));
        Assert.Equal(13, generator.ModelEvaluationCount(4));
        Assert.Equal(Enumerable.Range(1, 13), reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.Equal(13, r.TotalSteps));
    }

    public static TheoryData<string, GenerationOptions> BadOptions => new()
    {
        { "Steps", new GenerationOptions { Steps = 0 } },
        { "Steps", new GenerationOptions { Steps = -5 } },
        { "Steps", new GenerationOptions { Steps = 1000 } }, // SD's steps_offset 1 would start PNDM at timestep 1000
        { "Steps", new GenerationOptions { Steps = 1001 } },
        { "Steps", new GenerationOptions { Steps = int.MaxValue } },
        { "GuidanceScale", new GenerationOptions { GuidanceScale = double.NaN } },
        { "GuidanceScale", new GenerationOptions { GuidanceScale = double.PositiveInfinity } },
        { "GuidanceScale", new GenerationOptions { GuidanceScale = -1 } },
        { "Width", new GenerationOptions { Width = 17 } },
        { "Width", new GenerationOptions { Width = 0 } },
        { "Width", new GenerationOptions { Width = -16 } },
        { "Height", new GenerationOptions { Height = 15 } },
        { "Height", new GenerationOptions { Height = int.MinValue } },
        { "ImageCount", new GenerationOptions { ImageCount = 0 } },
        { "LoraScale", new GenerationOptions { LoraScale = double.NaN } },
        { "LoraScale", new GenerationOptions { LoraScale = double.NegativeInfinity } },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void BadOptionsFailWithTheOptionsExceptionNamingTheOption(string option, GenerationOptions options)
    {
        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Pndm).WithDevice("cpu").Build();
        var error = Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", options with { Seed = 1 }));
        Assert.Equal(option, error.Errors[0].Option);
        Assert.Equal(option, error.ParamName);
        Assert.StartsWith("Invalid options: " + option + " = ", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void EveryBadOptionIsListedAndLatentsOfTheWrongShapeDtypeOrDisposedAreRefused()
    {
        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim).WithDevice("cpu").Build();
        var several = Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", new GenerationOptions { Width = 3, Steps = 0, GuidanceScale = double.NaN }));
        Assert.Equal(new[] { "Width", "Steps", "GuidanceScale" }, several.Errors.Select(e => e.Option));

        using var wrongShape = zeros(1, 4, 4, 4);
        var shape = Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", new GenerationOptions { Steps = 1 }.WithInitialLatents(wrongShape)));
        Assert.Equal("InitialLatents", shape.Errors.Single().Option);
        Assert.Contains("[1, 4, 8, 8]", shape.Message, StringComparison.Ordinal);

        using var integers = zeros(new long[] { 1, 4, 8, 8 }, ScalarType.Int64);
        Assert.Equal("InitialLatents", Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", new GenerationOptions { Steps = 1 }.WithInitialLatents(integers))).Errors.Single().Option);

        var disposed = zeros(1, 4, 8, 8);
        disposed.Dispose();
        Assert.Equal("InitialLatents", Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", new GenerationOptions { Steps = 1 }.WithInitialLatents(disposed))).Errors.Single().Option);

        Assert.Throws<ArgumentNullException>(() => generator.Generate(null!, new GenerationOptions { Steps = 1 }));
        Assert.Equal("Steps", Assert.Throws<InvalidOptionsException>(() => generator.ModelEvaluationCount(0)).Errors.Single().Option);
    }

    [Fact]
    public void KarrasSigmasForASchedulerWithoutThemAreRefusedWhenChosen()
    {
        var error = Assert.Throws<InvalidOptionsException>(() => StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim, karrasSigmas: true));
        Assert.Equal("karrasSigmas", error.Errors.Single().Option);
        Assert.Contains("ddim", error.Message, StringComparison.Ordinal);
    }
}
