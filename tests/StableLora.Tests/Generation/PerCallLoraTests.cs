using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Generation;

/// <summary>One loaded generator serving calls with different LoRAs: each call equals a fresh generator built with those LoRAs.</summary>
public sealed class PerCallLoraTests
{
    private static string Fixture(string name) => Path.Combine(FixturePaths.Root, "lora-anywhere", name);

    private static StableDiffusionGeneratorBuilder Builder() =>
        StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim).WithDevice("cpu");

    private static GenerationOptions Options(params LoraSelection[] loras) =>
        new() { Steps = 2, Seed = 17, Width = 16, Height = 16, Loras = loras };

    [Fact]
    public void ThreeCallsWithDifferentLorasEqualThreeFreshGeneratorsBitForBit()
    {
        using var scope = NewDisposeScope();
        string kohya = Fixture("kohya_locon_te.safetensors"), loha = Fixture("loha.safetensors"), seed = Path.Combine(FixturePaths.TinySd, "lora_weights.pt");
        var calls = new[]
        {
            new[] { new LoraSelection(kohya, 0.8, 0.5) },
            new[] { new LoraSelection(loha, 1.0), new LoraSelection(seed, 0.6) },
            Array.Empty<LoraSelection>(),
            new[] { new LoraSelection(kohya, 0.3) },
        };

        using var shared = Builder().Build();
        foreach (var loras in calls)
        {
            using var served = shared.Generate("a house", Options(loras));
            var fresh = Builder();
            foreach (var lora in loras)
                fresh.WithLora(lora.Path, lora.Weight, lora.TextEncoderWeight);
            using var freshGenerator = fresh.Build();
            using var expected = freshGenerator.Generate("a house", Options());
            TensorAssert.Identical(expected.ImageTensor, served.ImageTensor, string.Join(" + ", loras.Select(l => $"{Path.GetFileName(l.Path)}:{l.Weight}")));
            Assert.Equal(loras.Select(l => Path.GetFileNameWithoutExtension(l.Path)), served.Parameters.Loras.Select(l => l.Name));
        }
    }

    [Fact]
    public void ALoraFileIsReadOnceAndAgainWhenItChanges()
    {
        using var scope = NewDisposeScope();
        using var temp = new TempDirectory();
        string path = temp.File("style.safetensors");
        File.Copy(Fixture("kohya_locon_te.safetensors"), path);
        using var generator = Builder().Build();
        using var first = generator.Generate("a house", Options(new LoraSelection(path)));
        using var again = generator.Generate("a house", Options(new LoraSelection(path)));
        TensorAssert.Identical(first.ImageTensor, again.ImageTensor, "the same file twice");

        File.Copy(Fixture("lokr.safetensors"), path, overwrite: true);
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow.AddMinutes(1));
        using var changed = generator.Generate("a house", Options(new LoraSelection(path)));
        using var lokr = Builder().WithLora(Fixture("lokr.safetensors")).Build();
        using var expected = lokr.Generate("a house", Options());
        TensorAssert.Identical(expected.ImageTensor, changed.ImageTensor, "the file after it changed");
    }

    [Fact]
    public void BadPerCallLorasAreNamedAndLeaveTheGeneratorAsItWas()
    {
        using var scope = NewDisposeScope();
        using var temp = new TempDirectory();
        using var generator = Builder().Build();
        using var before = generator.Generate("a house", Options());

        var weight = Assert.Throws<InvalidOptionsException>(() => generator.Generate("a house", Options(new LoraSelection(Fixture("loha.safetensors"), double.NaN))));
        Assert.Contains("Loras[0].Weight", weight.Message);
        File.WriteAllText(temp.File("broken.safetensors"), "not a LoRA");
        var broken = Assert.Throws<InvalidModelFileException>(() =>
            generator.Generate("a house", Options(new LoraSelection(Fixture("loha.safetensors")), new LoraSelection(temp.File("broken.safetensors")))));
        Assert.Equal(Path.GetFullPath(temp.File("broken.safetensors")), broken.FilePath);
        var twice = Assert.Throws<InvalidOptionsException>(() =>
            generator.Generate("a house", Options(new LoraSelection(Fixture("loha.safetensors")), new LoraSelection(Fixture("loha.safetensors"), 0.5))));
        Assert.Contains("twice", twice.Message);

        using var after = generator.Generate("a house", Options());
        TensorAssert.Identical(before.ImageTensor, after.ImageTensor, "no LoRA is left attached");
    }
}
