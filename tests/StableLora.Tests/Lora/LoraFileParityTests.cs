using StableLora.IO;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Lora;

/// <summary>
/// LoRA files as other tools write them (sd-scripts' LoRA with LoCon and text encoder, LyCORIS LoHa with Tucker
/// convolutions, LoKr, DoRA) on the tiny fixture: the seeded image StableLora renders with each file equals the image
/// diffusers renders from the base model with the file's changes merged into its weights in float64 (see the fixture
/// folder's README: the reference code computed every change, nothing was typed in).
/// </summary>
public sealed class LoraFileParityTests
{
    private static string Folder => Path.Combine(FixturePaths.Root, "lora-anywhere");

    public static TheoryData<string, string, double, double> Renders()
    {
        var data = new TheoryData<string, string, double, double>();
        foreach (string file in new[] { "kohya_locon_te", "loha", "lokr" })
        {
            data.Add(file, "unet1.0_te1.0", 1.0, 1.0);
            data.Add(file, "unet0.5_te0.7", 0.5, 0.7);
        }

        // DoRA at strength 1 only: at other strengths StableLora applies it as AUTOMATIC1111 and ComfyUI do,
        // W + s·(W_DoRA − W), where LyCORIS' own merge rescales the renormalisation instead (see formats.md).
        data.Add("lora_dora", "unet1.0_te1.0", 1.0, 1.0);
        data.Add("lora_dora_in", "unet1.0_te1.0", 1.0, 1.0);

        return data;
    }

    [Theory]
    [MemberData(nameof(Renders))]
    public void TheSeededImageEqualsDiffusersWithTheChangesMergedInFloat64(string file, string render, double unetWeight, double textEncoderWeight)
    {
        using var scope = NewDisposeScope();
        var expected = ExpectedImage(file, render);
        var actual = Render(Path.Combine(Folder, file + ".safetensors"), unetWeight, textEncoderWeight);
        AssertWithinLevels(expected, actual, $"{file} {render}");
        Assert.True(expected.sub(ExpectedImage(file, "base")).abs().max().item<float>() > 4f / 255, "the LoRA must change the image visibly for the test to mean anything");
    }

    [Fact]
    public void WeightZeroGivesTheBaseImage()
    {
        using var scope = NewDisposeScope();
        var baseImage = Render(null, 0, 0);
        AssertWithinLevels(ExpectedImage("kohya_locon_te", "base"), baseImage, "base");
        foreach (string file in new[] { "kohya_locon_te", "loha", "lokr", "lora_dora" })
            TensorAssert.Identical(baseImage, Render(Path.Combine(Folder, file + ".safetensors"), 0, 0), file);
    }

    /// <summary>
    /// Every module's weight change against the reference code's (LyCORIS' own modules, sd-scripts' formula): each
    /// module's change T (for DoRA the merged weight) times a fixed random vector for every module, and T itself for
    /// eight modules, one of each layer kind.
    /// </summary>
    [Theory]
    [InlineData("kohya_locon_te")]
    [InlineData("loha")]
    [InlineData("lokr")]
    [InlineData("lora_dora")]
    [InlineData("lora_dora_in")]
    public void EveryModulesChangeEqualsTheReferenceCodes(string file)
    {
        using var scope = NewDisposeScope();
        using var unet = Unet.UnetParityTests.LoadFixtureUnet();
        using var textEncoder = TextEncoder.TextEncoderParityTests.LoadFixtureTextEncoder();
        var models = new StableLora.Lora.AdaptableModels(unet, textEncoder);
        using var lora = LoraWeights.Load(Path.Combine(Folder, file + ".safetensors"));
        using var deltas = SafetensorsReader.Open(Path.Combine(Folder, file + ".deltas.safetensors"));
        bool merged = file.StartsWith("lora_dora", StringComparison.Ordinal);
        int dense = 0;
        Assert.Equal(215, lora.ModuleCount);
        foreach (var module in lora.Modules)
        {
            string prefix = LoraKeyNames.ToKohya(module.Key);
            var weight = models.Find(module.Key)!.Layer.Weight.detach().to(ScalarType.Float64);
            var change = module.DenseDelta(weight);
            var t = merged ? weight.add(change) : change;
            var flat = t.reshape(t.shape[0], -1);
            var probe = deltas.Read($"probe/{flat.shape[1]}").to(ScalarType.Float64);
            TensorAssert.Close(deltas.Read($"{prefix}.probe"), flat.matmul(probe), new Tolerance(2e-5, 1e-5), $"{file} {prefix} probe");
            if (deltas.Find(prefix) is not null)
            {
                TensorAssert.Close(deltas.Read(prefix), t, new Tolerance(1e-6, 1e-5), $"{file} {prefix}");
                dense++;
            }
        }

        Assert.Equal(8, dense);
    }

    private static Tensor ExpectedImage(string file, string render) => ReadTensor(Path.Combine(Folder, file + ".images.safetensors"), render);

    private static Tensor ReadTensor(string path, string name)
    {
        using var reader = SafetensorsReader.Open(path);
        return reader.Read(name);
    }

    private static Tensor Render(string? lora, double unetWeight, double textEncoderWeight)
    {
        var builder = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Pndm).WithDevice("cpu");
        if (lora is not null)
            builder.WithLora(lora, unetWeight, textEncoderWeight);
        using var generator = builder.Build();
        using var result = generator.Generate(FixtureCases.Case("seeded_pndm").GetProperty("prompt").GetString()!, FixtureCases.SeededOptions("seeded_pndm"));
        return result.ImageTensor.clone();
    }

    /// <summary>The bound: as 8-bit images, every level within 2 of the reference's and the mean difference at most 0.5.</summary>
    private static void AssertWithinLevels(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        var difference = Levels(expected).sub(Levels(actual)).abs().to(ScalarType.Float64);
        double max = difference.max().item<double>(), mean = difference.mean().item<double>();
        Assert.True(max <= 2 && mean <= 0.5, $"{what}: 8-bit levels differ by up to {max} (mean {mean:F3}); allowed 2 (mean 0.5)");

        static Tensor Levels(Tensor image) => image.to(ScalarType.Float64).mul(255).round().to(ScalarType.Int32);
    }
}
