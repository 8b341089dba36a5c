using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.IO;
using StableLora.Pipeline;
using StableLora.SingleFile;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.SingleFile;

/// <summary>
/// Single-file checkpoints made from the tiny fixture pipeline by our exporter (original LDM names) load back with the
/// single-file loader into models whose weights and outputs are identical to the pipeline's.
/// </summary>
public sealed class SingleFileTests
{
    private static SingleFileOptions FixtureConfigs => new() { ConfigDirectory = FixturePaths.TinyPipeline };

    [Fact]
    public void ExportedSafetensorsLoadsBackWithIdenticalWeightsAndOutputs()
    {
        using var temp = new TempDirectory();
        string file = temp.File("tiny.safetensors");
        using var original = LoadFixture();
        PipelineWriter.WriteSingleFile(original, file);

        using (var reader = SafetensorsReader.Open(file))
        {
            Assert.All(reader.Tensors, t => Assert.Matches(@"^(model\.diffusion_model|first_stage_model|cond_stage_model\.transformer)\.", t.Name));
            Assert.Equal(new long[] { 32, 32, 1, 1 }, reader.Find("first_stage_model.decoder.mid.attn_1.proj_out.weight")!.Shape);
            Assert.NotNull(reader.Find("model.diffusion_model.input_blocks.0.0.weight"));
            Assert.NotNull(reader.Find("cond_stage_model.transformer.text_model.final_layer_norm.weight"));
        }

        using var loaded = SingleFileLoader.Load(file, FixtureConfigs, Fp32(), "tiny");
        Assert.Equal("tiny", loaded.Name);
        Assert.Equal(Path.GetFullPath(file), loaded.Source);
        AssertSameModels(original, loaded);
        AssertSameOutputs(original, loaded);
    }

    [Fact]
    public void CkptPickleLoadsLikeTheSafetensors()
    {
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        var tensors = ExportedTensors(original, temp);
        TorchPickleWriter.Write(temp.File("tiny.ckpt"), tensors);

        using var loaded = SingleFileLoader.Load(temp.File("tiny.ckpt"), FixtureConfigs, Fp32());
        AssertSameModels(original, loaded);
    }

    [PythonTorchFact]
    public void LightningCkptWithStateDictWrapperEmaAndScheduleBuffersLoads()
    {
        // The layout of the original CompVis .ckpt: {"state_dict": {...weights, model_ema.*, betas, ...}, "global_step": N, "epoch": M}.
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        TorchPickleWriter.Write(temp.File("flat.pt"), ExportedTensors(original, temp));
        const string Script = """
            import sys, torch
            sd = torch.load(sys.argv[1], map_location="cpu")
            for k in [k for k in sd if k.startswith("model.diffusion_model.")]:
                sd["model_ema." + "".join(k.split(".")[1:])] = sd[k] * 2
            sd["model_ema.decay"] = torch.tensor(0.9999)
            sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
            sd["betas"] = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
            sd["alphas_cumprod"] = torch.cumprod(1 - sd["betas"], 0)
            torch.save({"state_dict": sd, "global_step": 470000, "epoch": 5}, sys.argv[2])
            """;
        PythonTorch.Run(Script, temp.File("flat.pt"), temp.File("lightning.ckpt"));

        var logger = new ListLogger();
        using (var regular = SingleFileLoader.Load(temp.File("lightning.ckpt"), FixtureConfigs, Fp32(logger)))
            AssertSameModels(original, regular);
        Assert.Contains(logger.Entries, e => e.Message.Contains("EMA and regular UNet weights", StringComparison.Ordinal));

        using var ema = SingleFileLoader.Load(temp.File("lightning.ckpt"), FixtureConfigs with { UseEmaWeights = true }, Fp32());
        var expected = original.Unet.state_dict();
        foreach (var (key, value) in ema.Unet.state_dict())
            TensorAssert.Identical(expected[key] * 2, value, key);
        AssertSameModels(original, ema, compareUnet: false);
    }

    [Fact]
    public void EmaWeightsAreUsedOnlyWhenAsked()
    {
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        var tensors = ExportedTensors(original, temp);
        var ema = tensors.Where(t => t.Key.StartsWith(LdmCheckpointLayout.UnetPrefix, StringComparison.Ordinal))
            .Select(t => new KeyValuePair<string, Tensor>(LdmCheckpointLayout.EmaKey(t.Key), t.Value + 1)).ToList();
        SafetensorsWriter.Write(temp.File("ema.safetensors"), tensors.Concat(ema));

        using (var regular = SingleFileLoader.Load(temp.File("ema.safetensors"), FixtureConfigs, Fp32()))
            AssertSameModels(original, regular);
        using (var withEma = SingleFileLoader.Load(temp.File("ema.safetensors"), FixtureConfigs with { UseEmaWeights = true }, Fp32()))
        {
            var expected = original.Unet.state_dict();
            foreach (var (key, value) in withEma.Unet.state_dict())
                TensorAssert.Identical(expected[key] + 1, value, key);
        }

        // Asked for, but the file has none: the regular weights, with a warning.
        var logger = new ListLogger();
        SafetensorsWriter.Write(temp.File("plain.safetensors"), tensors);
        using (var plain = SingleFileLoader.Load(temp.File("plain.safetensors"), FixtureConfigs with { UseEmaWeights = true }, Fp32(logger)))
            AssertSameModels(original, plain);
        Assert.Contains(logger.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("has none (model_ema.*)", StringComparison.Ordinal));
    }

    [Fact]
    public void HalfPrecisionFileLoadsIntoFloat32Models()
    {
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        PipelineWriter.WriteSingleFile(original, temp.File("half.safetensors"), ScalarType.Float16);
        using (var reader = SafetensorsReader.Open(temp.File("half.safetensors")))
        {
            Assert.All(reader.Tensors.Where(t => !t.Name.EndsWith("position_ids", StringComparison.Ordinal)), t => Assert.Equal(ScalarType.Float16, t.DType));
            Assert.Equal(ScalarType.Int64, reader.Find("cond_stage_model.transformer.text_model.embeddings.position_ids")!.DType);
        }

        using var loaded = SingleFileLoader.Load(temp.File("half.safetensors"), FixtureConfigs, Fp32());
        var expected = original.Vae.state_dict();
        foreach (var (key, value) in loaded.Vae.state_dict())
        {
            Assert.Equal(ScalarType.Float32, value.dtype);
            TensorAssert.Identical(expected[key].to(ScalarType.Float16).to(ScalarType.Float32), value, key);
        }
    }

    [Fact]
    public void TrainingExtrasAreSkippedAndUnknownTensorsWarned()
    {
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        var tensors = ExportedTensors(original, temp);
        tensors.Add(new("betas", linspace(0.00085, 0.012, 1000, ScalarType.Float64)));
        tensors.Add(new("alphas_cumprod", ones(1000, ScalarType.Float64)));
        tensors.Add(new("posterior_mean_coef2", ones(1000, ScalarType.Float64)));
        tensors.Add(new("model_ema.decay", tensor(0.9999f)));
        tensors.Add(new("model_ema.num_updates", tensor(1000)));
        tensors.Add(new("embedding_manager.embedder.weight", ones(2, 2)));
        SafetensorsWriter.Write(temp.File("extras.safetensors"), tensors);

        var logger = new ListLogger();
        using var loaded = SingleFileLoader.Load(temp.File("extras.safetensors"), FixtureConfigs, Fp32(logger));
        AssertSameModels(original, loaded);
        var warning = Assert.Single(logger.Entries, e => e.Level == LogLevel.Warning);
        Assert.Contains("embedding_manager.embedder.weight", warning.Message);
    }

    [Fact]
    public void TextEncoderKeysWithoutTheTextModelLevelLoad()
    {
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        var tensors = ExportedTensors(original, temp)
            .Select(t => new KeyValuePair<string, Tensor>(t.Key.Replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.", StringComparison.Ordinal), t.Value))
            .Where(t => !t.Key.EndsWith("position_ids", StringComparison.Ordinal))
            .ToList();
        SafetensorsWriter.Write(temp.File("old-te.safetensors"), tensors);

        using var loaded = SingleFileLoader.Load(temp.File("old-te.safetensors"), FixtureConfigs, Fp32());
        AssertSameModels(original, loaded);
    }

    [Fact]
    public void UnknownKeyUnderAComponentIsAStrictError()
    {
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        var tensors = ExportedTensors(original, temp);
        tensors.Add(new("model.diffusion_model.input_blocks.1.0.extra.weight", ones(2)));
        tensors.RemoveAll(t => t.Key == "first_stage_model.encoder.mid.attn_1.q.weight");
        SafetensorsWriter.Write(temp.File("broken.safetensors"), tensors);

        var error = Assert.Throws<StateDictMismatchException>(() => SingleFileLoader.Load(temp.File("broken.safetensors"), FixtureConfigs, Fp32()));
        Assert.Contains("model.diffusion_model.input_blocks.1.0.extra.weight", error.Message);

        tensors.RemoveAll(t => t.Key.EndsWith(".extra.weight", StringComparison.Ordinal));
        SafetensorsWriter.Write(temp.File("broken.safetensors"), tensors);
        var missing = Assert.Throws<StateDictMismatchException>(() => SingleFileLoader.Load(temp.File("broken.safetensors"), FixtureConfigs, Fp32()));
        Assert.Contains("encoder.mid_block.attentions.0.to_q.weight", Assert.Single(missing.MissingKeys));
    }

    [Fact]
    public void Sd2CheckpointIsRecognisedWithAClearMessage()
    {
        using var temp = new TempDirectory();
        SafetensorsWriter.Write(temp.File("sd2.safetensors"), new Dictionary<string, Tensor>
        {
            ["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = zeros(320, 1024),
            ["first_stage_model.encoder.conv_in.weight"] = zeros(1),
            ["cond_stage_model.model.token_embedding.weight"] = zeros(1),
        });
        var error = Assert.Throws<InvalidModelFileException>(() => SingleFileLoader.Load(temp.File("sd2.safetensors"), new SingleFileOptions(), Fp32()));
        Assert.Contains("Stable Diffusion 2.x", error.Message);
        Assert.Contains("1024-dim cross-attention", error.Message);
        Assert.Equal("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", error.Key);
    }

    [Theory]
    [InlineData("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "SDXL")]
    [InlineData("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "LoRA")]
    [InlineData("down_blocks.0.resnets.0.norm1.weight", "diffusers-format UNet")]
    [InlineData("encoder.down.0.block.0.norm1.weight", "VAE checkpoint")]
    public void OtherKindsOfFileAreNamed(string key, string expected)
    {
        using var temp = new TempDirectory();
        SafetensorsWriter.Write(temp.File("other.safetensors"), new Dictionary<string, Tensor> { [key] = zeros(2) });
        var error = Assert.Throws<InvalidModelFileException>(() => SingleFileLoader.Load(temp.File("other.safetensors"), new SingleFileOptions(), Fp32()));
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void InpaintingUnetIsNamed()
    {
        using var temp = new TempDirectory();
        SafetensorsWriter.Write(temp.File("inpaint.safetensors"), new Dictionary<string, Tensor>
        {
            ["model.diffusion_model.input_blocks.0.0.weight"] = zeros(320, 9, 3, 3),
            ["first_stage_model.encoder.conv_in.weight"] = zeros(1),
            ["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = zeros(1),
        });
        var error = Assert.Throws<InvalidModelFileException>(() => SingleFileLoader.Load(temp.File("inpaint.safetensors"), new SingleFileOptions(), Fp32()));
        Assert.Contains("inpainting", error.Message);
    }

    [Fact]
    public void ConfigFolderWithoutTokenizerAndSchedulerUsesTheBuiltInOnes()
    {
        using var temp = new TempDirectory();
        string configs = temp.File("configs");
        foreach (string component in new[] { "unet", "vae", "text_encoder" })
        {
            Directory.CreateDirectory(Path.Combine(configs, component));
            File.Copy(Path.Combine(FixturePaths.TinyPipeline, component, "config.json"), Path.Combine(configs, component, "config.json"));
        }

        using var original = LoadFixture();
        PipelineWriter.WriteSingleFile(original, temp.File("tiny.safetensors"));
        var logger = new ListLogger();
        using var loaded = SingleFileLoader.Load(temp.File("tiny.safetensors"), new SingleFileOptions { ConfigDirectory = configs }, Fp32(logger));
        AssertSameModels(original, loaded);
        Assert.Equal(2, logger.Entries.Count(e => e.Message.Contains("using the built-in SD 1.5", StringComparison.Ordinal)));
        string prompt = "a sketch of a cat, «quoted» &amp; Ünïcode";
        Assert.Equal(original.Tokenizer.Encode(prompt).InputIds, loaded.Tokenizer.Encode(prompt).InputIds);
        Assert.Equal(original.SchedulerConfig with { Source = "" }, loaded.SchedulerConfig with { Source = "" });
    }

    [Fact]
    public void BuiltInSd15ConfigsAreUsedByDefault()
    {
        // The tiny checkpoint does not fit SD 1.5's architecture: the strict loader says so, naming shapes from the SD 1.5 configs.
        using var temp = new TempDirectory();
        using var original = LoadFixture();
        PipelineWriter.WriteSingleFile(original, temp.File("tiny.safetensors"));
        var error = Assert.Throws<StateDictMismatchException>(() => SingleFileLoader.Load(temp.File("tiny.safetensors"), new SingleFileOptions(), Fp32()));
        Assert.Contains("[320, 4, 3, 3]", error.Message);
    }

    internal static StableDiffusionModel LoadFixture() =>
        StableDiffusionModel.LoadFolder(FixturePaths.TinyPipeline, Fp32());

    internal static ModelLoadSettings Fp32(ILogger? logger = null) => ModelLoadSettings.Uniform(CPU, ScalarType.Float32, logger ?? NullLogger.Instance);

    /// <summary>The tensors of the exported single file, read back (to rewrite into other layouts).</summary>
    internal static List<KeyValuePair<string, Tensor>> ExportedTensors(StableDiffusionModel model, TempDirectory temp)
    {
        string file = temp.File($"export-{Guid.NewGuid():N}.safetensors");
        PipelineWriter.WriteSingleFile(model, file);
        using var reader = SafetensorsReader.Open(file);
        return reader.Tensors.Select(t => new KeyValuePair<string, Tensor>(t.Name, reader.Read(t.Name))).ToList();
    }

    internal static void AssertSameModels(StableDiffusionModel expected, StableDiffusionModel actual, bool compareUnet = true)
    {
        var pairs = new List<(TorchSharp.torch.nn.Module, TorchSharp.torch.nn.Module)> { (expected.Vae, actual.Vae), (expected.TextEncoder, actual.TextEncoder) };
        if (compareUnet)
            pairs.Add((expected.Unet, actual.Unet));
        foreach (var (a, b) in pairs)
        {
            var left = a.state_dict();
            var right = b.state_dict();
            Assert.Equal(left.Keys.OrderBy(k => k), right.Keys.OrderBy(k => k));
            foreach (var (key, value) in left)
                TensorAssert.Identical(value, right[key], key);
        }
    }

    internal static void AssertSameOutputs(StableDiffusionModel expected, StableDiffusionModel actual)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var generator = new Generator(7, CPU);
        var latents = randn(new long[] { 2, 4, 8, 8 }, generator: generator);
        var text = expected.EncodePrompts(new[] { "a sketch", "a photo of a dog" });
        TensorAssert.Identical(text, actual.EncodePrompts(new[] { "a sketch", "a photo of a dog" }), "text encoder");
        var timesteps = tensor(new long[] { 10, 900 });
        TensorAssert.Identical(expected.Unet.Forward(latents, timesteps, text), actual.Unet.Forward(latents, timesteps, text), "unet");
        TensorAssert.Identical(expected.Vae.Decode(latents), actual.Vae.Decode(latents), "vae decode");
        var images = rand(new long[] { 1, 3, 16, 16 }, generator: generator) * 2 - 1;
        TensorAssert.Identical(expected.Vae.Encode(images).Mean, actual.Vae.Encode(images).Mean, "vae encode");
    }
}
