using StableLora.Advanced;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Api;

/// <summary>The built-in tiny model: written from the configs inside the library, deterministic, and usable by the public API.</summary>
public sealed class BuiltInTinyModelTests
{
    [Fact]
    public void CreateTinyNeedsNoFilesIsDeterministicAndGenerates()
    {
        using var temp = new TempDirectory();
        RandomPipeline.CreateTiny(temp.File("a"), seed: 0);
        RandomPipeline.CreateTiny(temp.File("b"), seed: 0);
        RandomPipeline.CreateTiny(temp.File("c"), seed: 1);
        string weights = Path.Combine("unet", "diffusion_pytorch_model.safetensors");
        Assert.Equal(File.ReadAllBytes(Path.Combine(temp.File("a"), weights)), File.ReadAllBytes(Path.Combine(temp.File("b"), weights)));
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(temp.File("a"), weights)), File.ReadAllBytes(Path.Combine(temp.File("c"), weights)));
        foreach (string file in new[] { "model_index.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json", "vae/config.json", "text_encoder/config.json" })
            Assert.True(File.Exists(Path.Combine(temp.File("a"), file)), file);

        using var generator = StableDiffusionGenerator.FromPretrained(temp.File("a")).WithDevice("cpu").Build();
        using var result = generator.Generate("a sketch of a cat", new GenerationOptions { Steps = 2, Seed = 1, Width = 64, Height = 64 });
        using var images = result.GetImageTensor();
        Assert.Equal(new long[] { 1, 64, 64, 3 }, images.shape);
        Assert.True(images.isfinite().all().item<bool>());
    }
}
