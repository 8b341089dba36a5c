using StableLora.Demo;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace StableLora.Tests.Demo;

/// <summary>
/// The built-in demo model draws the shapes its prompts name, and a short LoRA run on sketches of diamonds (a shape and
/// a word it never saw) makes "a sketch of a diamond" draw diamonds: training teaches what the images show. Margins
/// come from measurements on the reference machine (see the closing note of issue 17) and leave room for other CPUs,
/// whose kernels round differently.
/// </summary>
public sealed class DemoModelTests : IClassFixture<DemoModelTests.Model>
{
    private static readonly ulong[] Seeds = [1, 2, 3];
    private readonly Model _model;
    private readonly ITestOutputHelper _output;

    public DemoModelTests(Model model, ITestOutputHelper output)
    {
        _model = model;
        _output = output;
    }

    [Fact]
    public void Base_model_draws_the_shape_each_prompt_names()
    {
        using var generator = Generator(lora: null);
        var failures = new List<string>();
        int recognized = 0, total = 0;
        foreach (var shape in ShapeSketches.BaseShapes)
        {
            int ofShape = 0;
            foreach (ulong seed in Seeds)
            {
                using var result = generator.Generate(ShapeSketches.Caption(shape), new GenerationOptions { Steps = 20, Seed = seed });
                var recognition = ShapeScores.Recognize(result.GetPixels(0));
                total++;
                if (recognition.Best.Shape == shape)
                {
                    recognized++;
                    ofShape++;
                }
                else
                {
                    failures.Add($"{shape} seed {seed}: looks like a {recognition.Best.Shape} (F1 {recognition.Best.F1:F2} vs {recognition.For(shape).F1:F2})");
                }
            }

            Assert.True(ofShape >= Seeds.Length - 1, $"{shape}: {ofShape}/{Seeds.Length} recognised; {string.Join("; ", failures)}");
        }

        Assert.True(recognized >= total - 2, $"{recognized}/{total} recognised; {string.Join("; ", failures)}");
    }

    [Fact]
    public async Task A_lora_trained_on_diamonds_makes_the_diamond_prompt_draw_diamonds_and_scale_zero_gives_the_base_images()
    {
        using var temp = new TempDirectory();
        string data = temp.File("diamonds");
        ShapeSketches.WriteDataset(data, count: 8, size: DemoPipeline.ImageSize, seed: 1, ShapeSketches.LoraShape);
        var trainer = LoraTrainingBuilder.FromPretrained(_model.Path)
            .WithDataset(data)
            .WithCaption("", useCaptionFiles: true)
            .WithResolution(DemoPipeline.ImageSize)
            .WithBatchSize(2)
            .WithLearningRate(5e-3)
            .WithMaxSteps(Steps)
            .WithWarmupSteps(10)
            .WithCheckpointEvery(0)
            .WithDevice("cpu")
            .WithSeed(0)
            .WithOutputDirectory(temp.File("out"))
            .Build();
        var result = await trainer.TrainAsync();

        using var generator = Generator(lora: null);
        string prompt = ShapeSketches.Caption(ShapeSketches.LoraShape);
        int diamondsBefore = 0, diamondsAfter = 0;
        double gain = 0;
        var margins = new List<string>();
        foreach (ulong seed in DiamondSeeds)
        {
            var options = new GenerationOptions { Steps = 20, Seed = seed };
            using var baseImage = generator.Generate(prompt, options);
            using var trained = generator.Generate(prompt, options with { Loras = [new LoraSelection(result.LoraPath)] });
            using var scaledToZero = generator.Generate(prompt, options with { Loras = [new LoraSelection(result.LoraPath, Weight: 0)] });
            Assert.Equal(baseImage.GetPixels(0).Pixels, scaledToZero.GetPixels(0).Pixels);
            diamondsBefore += ShapeScores.IsDiamondRatherThanSquare(baseImage.GetPixels(0)) ? 1 : 0;
            diamondsAfter += ShapeScores.IsDiamondRatherThanSquare(trained.GetPixels(0)) ? 1 : 0;
            var before = ShapeScores.Recognize(baseImage.GetPixels(0));
            var after = ShapeScores.Recognize(trained.GetPixels(0));
            gain += (after.For(Shape.Diamond).F1 - after.For(Shape.Square).F1 - (before.For(Shape.Diamond).F1 - before.For(Shape.Square).F1)) / DiamondSeeds.Length;
            margins.Add($"seed {seed}: diamond-square F1 before {before.For(Shape.Diamond).F1 - before.For(Shape.Square).F1:F3}, after {after.For(Shape.Diamond).F1 - after.For(Shape.Square).F1:F3}");
        }

        string detail = string.Join("; ", margins);
        _output.WriteLine($"diamonds before {diamondsBefore}/{DiamondSeeds.Length}, after {diamondsAfter}/{DiamondSeeds.Length}: {detail}");
        Assert.True(diamondsBefore == 0, $"the base model drew {diamondsBefore} diamonds before training ({detail})");
        // Measured 2026-12-05 (AMD Zen 5, 2 cores, 200 steps): 4/4 diamonds after; the diamond's F1 lead over the square's
        // rose by 0.71 on average (from about -0.54 to +0.06..+0.37). Two drawings sit close to the line, so the count
        // asks for half; the mean gain, with 0.3 against 0.71 measured, is the measure that holds on other CPUs.
        Assert.True(diamondsAfter >= DiamondSeeds.Length / 2, $"{diamondsAfter}/{DiamondSeeds.Length} diamonds after training ({detail})");
        Assert.True(gain > MinimumMeanGain, $"mean gain of the diamond's F1 over the square's {gain:F3} ({detail})");
    }

    /// <summary>A shortened demo run (the CLI's demo trains 300 steps on 16 images; this one 200 on 8).</summary>
    private const int Steps = 200;

    private static readonly ulong[] DiamondSeeds = [1, 2, 3, 4];

    private const double MinimumMeanGain = 0.3;

    private StableDiffusionGenerator Generator(string? lora)
    {
        var builder = StableDiffusionGenerator.FromPretrained(_model.Path).WithScheduler(SchedulerKind.DpmSolverMultistep).WithDevice("cpu");
        if (lora is not null)
            builder.WithLora(lora);
        return builder.Build();
    }

    /// <summary>The demo model written once for the class.</summary>
    public sealed class Model : IDisposable
    {
        private readonly TempDirectory _temp = new();

        public Model()
        {
            Path = _temp.File("demo-model");
            DemoPipeline.Create(Path);
        }

        public string Path { get; }

        public void Dispose() => _temp.Dispose();
    }
}
