using StableLora.Data;
using StableLora.IO;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.SingleFile;

/// <summary>Conversions through the public API: folder to single file and back, and the builders taking single files.</summary>
public sealed class ModelConverterTests
{
    [Fact]
    public void FolderToSingleFileToFolderKeepsEveryWeightConfigAndTokenizerFile()
    {
        using var temp = new TempDirectory();
        string single = temp.File("tiny.safetensors");
        ModelConverter.ToSingleFile(FixturePaths.TinyPipeline, single);
        Assert.Equal("pt", SafetensorsReader.ReadMetadata(single)["format"]);

        string folder = temp.File("converted");
        ModelConverter.ToDiffusersFolder(single, folder, new ModelConversionOptions { SingleFile = new SingleFileOptions { ConfigDirectory = FixturePaths.TinyPipeline } });

        foreach (string file in new[] { "unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json",
                     "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json" })
            Assert.Equal(File.ReadAllText(Path.Combine(FixturePaths.TinyPipeline, file)), File.ReadAllText(Path.Combine(folder, file)));
        Assert.Contains("\"PNDMScheduler\"", File.ReadAllText(Path.Combine(folder, "model_index.json")));

        using var original = SingleFileTests.LoadFixture();
        using var converted = StableDiffusionModel.LoadFolder(folder, SingleFileTests.Fp32());
        SingleFileTests.AssertSameModels(original, converted);
        SingleFileTests.AssertSameOutputs(original, converted);
    }

    [Fact]
    public void SingleFileWithBuiltInDefaultsWritesTheBuiltInTokenizer()
    {
        using var temp = new TempDirectory();
        TokenizerFiles.BuiltIn.WriteTo(temp.File("tokenizer"));
        foreach (string file in new[] { "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(FixturePaths.TinyPipeline, "tokenizer", file)), File.ReadAllBytes(Path.Combine(temp.File("tokenizer"), file)));
    }

    [Fact]
    public void HalfPrecisionExportAndOverwriteRules()
    {
        using var temp = new TempDirectory();
        string single = temp.File("half.safetensors");
        ModelConverter.ToSingleFile(FixturePaths.TinyPipeline, single, new ModelConversionOptions { DType = ModelDType.Float16 });
        using (var reader = SafetensorsReader.Open(single))
            Assert.Equal(ScalarType.Float16, reader.Find("model.diffusion_model.out.2.weight")!.DType);

        Assert.Throws<IOException>(() => ModelConverter.ToSingleFile(FixturePaths.TinyPipeline, single));
        ModelConverter.ToSingleFile(FixturePaths.TinyPipeline, single, new ModelConversionOptions { Overwrite = true });
        using (var reader = SafetensorsReader.Open(single))
            Assert.Equal(ScalarType.Float32, reader.Find("model.diffusion_model.out.2.weight")!.DType);

        Assert.Throws<ArgumentException>(() => ModelConverter.ToSingleFile(FixturePaths.TinyPipeline, temp.File("model.ckpt")));
        Directory.CreateDirectory(temp.File("busy"));
        File.WriteAllText(temp.File("busy/x.txt"), "x");
        Assert.Throws<IOException>(() => ModelConverter.ToDiffusersFolder(FixturePaths.TinyPipeline, temp.File("busy")));
    }

    [Fact]
    public async Task TrainingStartsFromASingleFileAndFromAHubId()
    {
        using var temp = new TempDirectory();
        string sketches = temp.File("sketches");
        SketchImageGenerator.Generate(sketches, count: 2, size: 24, seed: 3);
        string single = temp.File("tiny.safetensors");
        ModelConverter.ToSingleFile(FixturePaths.TinyPipeline, single);
        HubFiles.CreateCachedRepo(temp.File("cache"), "test-org/tiny-sd", HubFiles.ReadFolder(FixturePaths.TinyPipeline));

        LoraTrainingBuilder Tiny(string model, string output) => LoraTrainingBuilder.FromPretrained(model)
            .WithDataset(sketches).WithResolution(16).WithMaxSteps(2).WithWarmupSteps(0).WithCheckpointEvery(0)
            .WithDevice("cpu").WithOutputDirectory(temp.File(output));

        var fromFile = await Tiny(single, "from-file")
            .WithSingleFileOptions(new SingleFileOptions { ConfigDirectory = FixturePaths.TinyPipeline })
            .Build().TrainAsync();
        var fromHub = await Tiny("test-org/tiny-sd", "from-hub")
            .WithHubOptions(new HubOptions { CacheDirectory = temp.File("cache"), Offline = true })
            .Build().TrainAsync();
        var fromFolder = await Tiny(FixturePaths.TinyPipeline, "from-folder").Build().TrainAsync();
        Assert.Equal(2, fromFile.StepsCompleted);
        Assert.Equal(2, fromHub.StepsCompleted);

        // Same weights, same seed: the same LoRA whichever way the base model was held.
        foreach (var other in new[] { "from-file", "from-hub" })
        {
            using var expected = SafetensorsReader.Open(Path.Combine(temp.File("from-folder"), "lora_kohya.safetensors"));
            using var actual = SafetensorsReader.Open(Path.Combine(temp.File(other), "lora_kohya.safetensors"));
            foreach (var info in expected.Tensors)
            {
                using var a = expected.Read(info.Name);
                using var b = actual.Read(info.Name);
                TensorAssert.Identical(a, b, $"{other}: {info.Name}");
            }
        }

        _ = fromFolder;
        var invalid = Assert.Throws<InvalidOptionsException>(() => Tiny(single, "x")
            .WithSingleFileOptions(new SingleFileOptions { ConfigDirectory = temp.File("nowhere") }).Build());
        Assert.Contains(invalid.Errors, e => e.Option == "SingleFile.ConfigDirectory");
    }
}
