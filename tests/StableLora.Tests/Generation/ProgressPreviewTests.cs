using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Generation;

/// <summary>Progress reports carry a cheap preview when asked: latents to RGB by a fixed linear map, at latent resolution.</summary>
public sealed class ProgressPreviewTests
{
    [Fact]
    public void EveryReportCarriesAPreviewOfTheLatentSizeOnlyWhenAsked()
    {
        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.EulerDiscrete).WithDevice("cpu").Build();
        var withPreviews = new List<GenerationProgress>();
        using (generator.Generate("a tree", new GenerationOptions { Steps = 3, Seed = 2, Width = 32, Height = 16, Previews = true }, new SynchronousProgress<GenerationProgress>(withPreviews.Add)))
        {
        }

        Assert.Equal(3, withPreviews.Count);
        int factor = generator.Model.VaeScaleFactor;
        Assert.All(withPreviews, p => Assert.Equal((32 / factor, 16 / factor), (p.Preview!.Width, p.Preview.Height)));
        Assert.NotEqual(withPreviews[0].Preview!.Pixels, withPreviews[2].Preview!.Pixels);

        var plain = new List<GenerationProgress>();
        using (generator.Generate("a tree", new GenerationOptions { Steps = 3, Seed = 2, Width = 32, Height = 16 }, new SynchronousProgress<GenerationProgress>(plain.Add)))
        {
        }

        Assert.All(plain, p => Assert.Null(p.Preview));
    }

    [Fact]
    public void ThePreviewIsTheLinearMapOfTheFirstImagesLatents()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(5);
        var latents = randn(new long[] { 2, 4, 3, 5 }, generator: generator);
        var preview = LatentPreview.Of(latents)!;
        double[,] factors = { { 0.3512, 0.2297, 0.3227 }, { 0.3250, 0.4974, 0.2350 }, { -0.2829, 0.1762, 0.2721 }, { -0.2120, -0.2616, -0.7177 } };
        var values = latents[0].to(ScalarType.Float64).data<double>().ToArray();
        for (int y = 0; y < 3; y++)
        {
            for (int x = 0; x < 5; x++)
            {
                var pixel = preview[x, y];
                var channels = new[] { pixel.R, pixel.G, pixel.B };
                for (int c = 0; c < 3; c++)
                {
                    double sum = 0;
                    for (int k = 0; k < 4; k++)
                        sum += values[(k * 3 + y) * 5 + x] * factors[k, c];
                    double expected = Math.Clamp((sum + 1) / 2, 0, 1) * 255;
                    Assert.InRange(channels[c], Math.Floor(expected - 0.51), Math.Ceiling(expected + 0.51));
                }
            }
        }

        Assert.Null(LatentPreview.Of(zeros(1, 16, 2, 2)));
    }
}
