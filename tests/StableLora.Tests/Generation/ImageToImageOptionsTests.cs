using StableLora.Advanced;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Generation;

/// <summary>Image to image's options (issue 16, item 5): checks, sizes and the strength edges as diffusers 0.21.4 has them.</summary>
public sealed class ImageToImageOptionsTests
{
    private static readonly string Init = Path.Combine(FixturePaths.Root, "img2img", "init_24x16.png");

    private static StableDiffusionGenerator Generator(SchedulerKind kind = SchedulerKind.Ddim) =>
        StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(kind).WithDevice("cpu").Build();

    [Theory]
    [InlineData(-0.1)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void StrengthOutsideZeroToOneIsAnErrorNamingIt(double strength)
    {
        using var generator = Generator();
        var error = Assert.Throws<InvalidOptionsException>(() =>
            generator.Generate("x", new GenerationOptions { InitImage = RgbImage.Load(Init), Strength = strength, Steps = 2 }));
        Assert.Contains(error.Errors, e => e.Option == nameof(GenerationOptions.Strength));
        Assert.Throws<InvalidOptionsException>(() => generator.ModelEvaluationCount(4, strength));
    }

    [Fact]
    public void StrengthWithoutAnInitImageIsAnError()
    {
        using var generator = Generator();
        var error = Assert.Throws<InvalidOptionsException>(() => generator.Generate("x", new GenerationOptions { Strength = 0.5, Steps = 2 }));
        var strength = Assert.Single(error.Errors);
        Assert.Equal(nameof(GenerationOptions.Strength), strength.Option);
        Assert.Contains("InitImage", strength.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void InitImageAndInitialLatentsTogetherAreAnError()
    {
        using var generator = Generator();
        using var latents = zeros(1, 4, 8, 12);
        var error = Assert.Throws<InvalidOptionsException>(() =>
            generator.Generate("x", new GenerationOptions { InitImage = RgbImage.Load(Init), Steps = 2 }.WithInitialLatents(latents)));
        Assert.Contains(error.Errors, e => e.Option == nameof(GenerationOptions.InitialLatents));
    }

    [Fact]
    public void AnInitImageSmallerThanTheVaeFactorIsAnError()
    {
        using var generator = Generator();
        var error = Assert.Throws<InvalidOptionsException>(() =>
            generator.Generate("x", new GenerationOptions { InitImage = new RgbImage(1, 5, new byte[15]), Steps = 2 }));
        Assert.Contains(error.Errors, e => e.Option == nameof(GenerationOptions.InitImage));
    }

    [Fact]
    public void TheSizeIsTheInitImagesUnlessWidthAndHeightAreGiven()
    {
        using var generator = Generator();
        using var own = generator.Generate("x", new GenerationOptions { InitImage = RgbImage.Load(Init), Steps = 2, Seed = 1 });
        Assert.Equal(new long[] { 1, 16, 24, 3 }, own.ImageTensor.shape);
        Assert.Equal(0.8, own.Parameters.DenoisingStrength);
        using var resized = generator.Generate("x", new GenerationOptions { InitImage = RgbImage.Load(Init), Steps = 2, Seed = 1, Width = 16, Height = 20 });
        Assert.Equal(new long[] { 1, 20, 16, 3 }, resized.ImageTensor.shape);
        Assert.Equal((16, 20), (resized.Parameters.Width, resized.Parameters.Height));
    }

    /// <summary>
    /// int(steps * strength) = 0: diffusers' DDIM and Euler have no timestep left and fail (the fixture's edge cases);
    /// the port refuses with a message naming Strength. PNDM's PLMS schedule keeps its extra last timestep, so diffusers
    /// runs that one step, and so does the port.
    /// </summary>
    [Fact]
    public void AStrengthThatLeavesNoTimestepIsRefusedExceptForPndmsExtraStep()
    {
        using (var ddim = Generator(SchedulerKind.Ddim))
        {
            var error = Assert.Throws<InvalidOptionsException>(() =>
                ddim.Generate("x", new GenerationOptions { InitImage = RgbImage.Load(Init), Strength = 0.1, Steps = 4 }));
            Assert.Equal(nameof(GenerationOptions.Strength), Assert.Single(error.Errors).Option);
            Assert.Contains("no timestep", error.Message, StringComparison.Ordinal);
            Assert.Throws<InvalidOptionsException>(() => ddim.ModelEvaluationCount(4, 0.0));
            Assert.Equal(4, ddim.ModelEvaluationCount(4, 1.0));
            Assert.Equal(2, ddim.ModelEvaluationCount(4, 0.5));
        }

        using var pndm = Generator(SchedulerKind.Pndm);
        Assert.Equal(1, pndm.ModelEvaluationCount(4, 0.1));
        Assert.Equal(5, pndm.ModelEvaluationCount(4, 1.0));
        var reports = new List<GenerationProgress>();
        using var result = pndm.Generate("x", new GenerationOptions { InitImage = RgbImage.Load(Init), Strength = 0.1, Steps = 4, Seed = 1 },
            new SyncProgress(reports.Add));
        Assert.Equal(new[] { (1, 1) }, reports.Select(r => (r.Step, r.TotalSteps)));
    }

    [Fact]
    public void DenoisingStrengthRoundTripsThroughTheParametersText()
    {
        var parameters = new GenerationParameters
        {
            Prompt = "a cat", NegativePrompt = "", Steps = 20, Sampler = "DDIM", CfgScale = 7.5, Seed = 1, Width = 512, Height = 512, ModelName = "sd15", Loras = Array.Empty<LoraReference>(), Version = "StableLora",
            DenoisingStrength = 0.65,
        };
        string text = parameters.ToA1111Text();
        Assert.Contains("Denoising strength: 0.65", text, StringComparison.Ordinal);
        Assert.Equal(0.65, GenerationParameters.Parse(text).DenoisingStrength);
        Assert.DoesNotContain("Denoising", (parameters with { DenoisingStrength = null }).ToA1111Text(), StringComparison.Ordinal);
        Assert.Null(GenerationParameters.Parse((parameters with { DenoisingStrength = null }).ToA1111Text()).DenoisingStrength);
    }

    private sealed class SyncProgress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }
}
