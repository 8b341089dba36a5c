using StableLora.IO;
using StableLora.Layers;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Lora;

/// <summary>Files whose modules do not all fit the model: refused naming the key, or skipped with a warning when asked; other model families refused.</summary>
public sealed class LoraKeyMatchingTests
{
    // A real kohya module of the tiny fixture's UNet, and one the fixture does not have (its last down block has no attentions).
    private const string Present = "lora_unet_down_blocks_0_attentions_0_proj_in";
    private const string Absent = "lora_unet_down_blocks_2_attentions_0_proj_in";

    private static void WriteLora(string path, params string[] modules)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3);
        var tensors = new Dictionary<string, Tensor>();
        foreach (string module in modules)
        {
            tensors[$"{module}.lora_down.weight"] = randn(new long[] { 4, 32, 1, 1 }, generator: generator).Times(0.3);
            tensors[$"{module}.lora_up.weight"] = randn(new long[] { 32, 4, 1, 1 }, generator: generator).Times(0.3);
            tensors[$"{module}.alpha"] = tensor(2f);
        }

        SafetensorsWriter.Write(path, tensors);
    }

    private static Tensor Render(string? lora, bool skipUnmatched = false, ListLogger? logger = null)
    {
        var builder = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim).WithDevice("cpu");
        if (lora is not null)
            builder.WithLora(lora);
        if (skipUnmatched)
            builder.SkipUnmatchedLoraKeys();
        if (logger is not null)
            builder.WithLogger(logger);
        using var generator = builder.Build();
        using var result = generator.Generate("a cat", new GenerationOptions { Steps = 2, Seed = 5, Width = 16, Height = 16 });
        return result.ImageTensor.clone();
    }

    [Fact]
    public void AModuleTheModelLacksIsAnErrorNamingItOrWhenAskedSkippedWithAWarningThatCountsIt()
    {
        using var temp = new TempDirectory();
        string mixed = temp.File("mixed.safetensors");
        string clean = temp.File("clean.safetensors");
        WriteLora(mixed, Present, Absent);
        WriteLora(clean, Present);

        var error = Assert.Throws<InvalidModelFileException>(() => Render(mixed));
        Assert.Equal($"{Absent}.lora_down.weight", error.Key);
        Assert.Equal(mixed, error.FilePath);

        var logger = new ListLogger();
        var skipped = Render(mixed, skipUnmatched: true, logger);
        var warning = Assert.Single(logger.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning);
        Assert.Contains("1", warning.Message);
        Assert.Contains(Absent, warning.Message);
        TensorAssert.Identical(Render(clean), skipped, "the skipped module changes nothing");
        Assert.True(skipped.sub(Render(null)).abs().max().item<float>() > 0, "the matched module is applied");
    }

    [Fact]
    public void ANameNoSdLayerHasIsAnErrorUnlessSkipped()
    {
        using var temp = new TempDirectory();
        string path = temp.File("foreign.safetensors");
        WriteLora(path, Present, "lora_unet_input_blocks_1_1_proj_in");
        var error = Assert.Throws<InvalidModelFileException>(() => Render(path));
        Assert.Equal("lora_unet_input_blocks_1_1_proj_in.lora_down.weight", error.Key);
        var logger = new ListLogger();
        Render(path, skipUnmatched: true, logger);
        Assert.Contains(logger.Entries, e => e.Message.Contains("input_blocks_1_1_proj_in", StringComparison.Ordinal));
    }

    [Fact]
    public void SdxlLorasAreRefusedSayingSo()
    {
        using var temp = new TempDirectory();
        string path = temp.File("sdxl.safetensors");
        WriteLora(path, Present, "lora_te2_text_model_encoder_layers_0_mlp_fc1");
        var error = Assert.Throws<InvalidModelFileException>(() => LoraWeights.Load(path));
        Assert.Contains("SDXL", error.Message);

        string tagged = temp.File("tagged.safetensors");
        SafetensorsWriter.Write(tagged, new Dictionary<string, Tensor>
        {
            [$"{Present}.lora_down.weight"] = zeros(4, 32, 1, 1),
            [$"{Present}.lora_up.weight"] = zeros(32, 4, 1, 1),
        }, new Dictionary<string, string> { ["ss_base_model_version"] = "sdxl_base_v1-0" });
        Assert.Contains("SDXL", Assert.Throws<InvalidModelFileException>(() => LoraWeights.Load(tagged)).Message);
    }
}
