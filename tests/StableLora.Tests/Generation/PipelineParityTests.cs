using StableLora.Advanced;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Generation;

/// <summary>Whole text-to-image calls against diffusers' StableDiffusionPipeline on the tiny fixture (CPU, float32).</summary>
public sealed class PipelineParityTests
{
    private const string PipelineFile = "pipeline.safetensors";
    private const string SeededFile = "seeded.safetensors";
    private static readonly string Prompt = FixtureCases.Case("pipeline").GetProperty("prompt").GetString()!;
    private static readonly string Negative = FixtureCases.Case("pipeline").GetProperty("negative_prompt").GetString()!;

    [Theory]
    [InlineData("PNDM", SchedulerKind.Pndm, false, 1.0)]
    [InlineData("DDIM", SchedulerKind.Ddim, false, 1.0)]
    [InlineData("EulerDiscrete", SchedulerKind.EulerDiscrete, false, 1.0)]
    [InlineData("DPMSolverMultistep", SchedulerKind.DpmSolverMultistep, false, 1.0)]
    [InlineData("PNDM_lora", SchedulerKind.Pndm, true, 1.0)]
    [InlineData("DDIM_lora", SchedulerKind.Ddim, true, 1.0)]
    [InlineData("EulerDiscrete_lora", SchedulerKind.EulerDiscrete, true, 1.0)]
    [InlineData("DPMSolverMultistep_lora", SchedulerKind.DpmSolverMultistep, true, 1.0)]
    [InlineData("PNDM_lora_scale_0_5", SchedulerKind.Pndm, true, 0.5)]
    public void ImagesFromFixedLatentsMatchDiffusers(string run, SchedulerKind scheduler, bool withLora, double loraScale)
    {
        using var scope = NewDisposeScope();
        var builder = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(scheduler).WithDevice("cpu");
        if (withLora)
            builder.WithLora(Path.Combine(FixturePaths.TinySd, "lora_weights.pt"));
        using var generator = builder.Build();
        using var result = generator.Generate(Prompt, new GenerationOptions
        {
            NegativePrompt = Negative,
            Steps = 10,
            GuidanceScale = 7.5,
            LoraScale = loraScale,
        }.WithInitialLatents(ExpectedTensors.Read(PipelineFile, "initial_latents")));
        TensorAssert.Close(ExpectedTensors.Read(PipelineFile, $"{run}_image"), result.ImageTensor, FixtureCases.Tolerance("pipeline"), $"{run} image");
    }

    [Theory]
    [InlineData("seeded_pndm", SchedulerKind.Pndm)]
    [InlineData("seeded_euler_a_x2", SchedulerKind.EulerAncestralDiscrete)]
    [InlineData("seeded_dpmpp_h16_w24", SchedulerKind.DpmSolverMultistep)]
    public void SeededCallsReproduceDiffusersImages(string caseId, SchedulerKind scheduler)
    {
        using var scope = NewDisposeScope();
        var spec = FixtureCases.Case(caseId);
        var options = FixtureCases.SeededOptions(caseId);
        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(scheduler).WithDevice("cpu").Build();
        using var result = generator.Generate(spec.GetProperty("prompt").GetString()!, options);

        TensorAssert.Close(ExpectedTensors.Read(SeededFile, $"{caseId}.image"), result.ImageTensor, FixtureCases.Tolerance(caseId, "image"), "image");
        var expectedLevels = ExpectedTensors.Read(SeededFile, $"{caseId}.image_uint8").to(ScalarType.Int32);
        for (int i = 0; i < result.Count; i++)
        {
            using var image = result.ToImage(i);
            var levels = new int[image.Height * image.Width * 3];
            image.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < rows.Height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++)
                    {
                        levels[(y * row.Length + x) * 3] = row[x].R;
                        levels[(y * row.Length + x) * 3 + 1] = row[x].G;
                        levels[(y * row.Length + x) * 3 + 2] = row[x].B;
                    }
                }
            });
            TensorAssert.Close(expectedLevels[i].flatten(), tensor(levels), FixtureCases.Tolerance(caseId, "image_uint8"), $"uint8 image {i}");
        }

        Assert.Equal(options.Seed, result.Seed);
    }

    [Fact]
    public void GuidanceAtOrBelowOneMakesNoUnconditionalPass()
    {
        using var scope = NewDisposeScope();
        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim).WithDevice("cpu").Build();
        var latents = ExpectedTensors.Read(PipelineFile, "initial_latents");
        using var withNegative = generator.Generate(Prompt, new GenerationOptions { NegativePrompt = "anything", GuidanceScale = 1.0, Steps = 4 }.WithInitialLatents(latents));
        using var without = generator.Generate(Prompt, new GenerationOptions { GuidanceScale = 1.0, Steps = 4 }.WithInitialLatents(latents));
        TensorAssert.Identical(without.ImageTensor, withNegative.ImageTensor, "the negative prompt is unused without guidance");
    }
}
