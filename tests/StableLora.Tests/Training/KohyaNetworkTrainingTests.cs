using StableLora.Data;
using StableLora.IO;
using StableLora.Layers;
using StableLora.Lora;
using StableLora.Samples.Cli;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// A kohya-style network (every Transformer2DModel layer, LoCon convolutions, the text encoder) trained on the tiny
/// fixture: what it writes, that the file holds exactly what was trained, that it converts and generates.
/// </summary>
public sealed class KohyaNetworkTrainingTests
{
    private static LoraTrainingBuilder KohyaRun(TempDirectory temp) =>
        LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithDataset(Sketches(temp))
            .WithResolution(16)
            .WithBatchSize(2)
            .WithLearningRate(1e-3)
            .WithMaxSteps(4)
            .WithWarmupSteps(1)
            .WithRank(4)
            .WithAlpha(2)
            .WithPreset(LoraPreset.Kohya)
            .WithConvRank(2, 1)
            .WithTextEncoderLora(learningRate: 5e-4)
            .WithCheckpointEvery(2)
            .WithDevice("cpu")
            .WithSeed(5)
            .WithOutputDirectory(temp.File("output"));

    private static string Sketches(TempDirectory temp)
    {
        string directory = temp.File("sketches");
        if (!Directory.Exists(directory))
            SketchImageGenerator.Generate(directory, count: 4, size: 24, seed: 2);
        return directory;
    }

    [Fact]
    public async Task TheKohyaFileIsTheMainOutputHoldsExactlyTheTrainedWeightsAndFrozenModelsStayBitIdentical()
    {
        using var temp = new TempDirectory();
        Directory.CreateDirectory(temp.File("output"));
        File.WriteAllText(temp.File("output/lora_weights.pt"), "an earlier run's LoRA");
        List<KeyValuePair<string, Tensor>>? before = null, after = null;
        var logger = new ListLogger();
        var result = await KohyaRun(temp).WithLogger(logger).WithHooks(new TrainingHooks
        {
            ModelLoaded = model => before = Frozen(model),
            TrainingFinished = model => after = Frozen(model),
        }).Build().TrainAsync();

        Assert.Null(result.WeightsPath);
        Assert.Equal(result.KohyaWeightsPath, result.LoraPath);
        Assert.False(File.Exists(temp.File("output/lora_weights.pt")), "a stale seed-format file must not survive beside the new LoRA");
        Assert.Contains(logger.Entries, e => e.Message.Contains("lora_weights.pt", StringComparison.Ordinal) && e.Message.Contains("earlier run", StringComparison.Ordinal));
        Assert.True(File.Exists(temp.File("output/checkpoint-step-2/lora_kohya.safetensors")));
        Assert.False(File.Exists(temp.File("output/checkpoint-step-2/lora_weights.pt")));
        for (int i = 0; i < before!.Count; i++)
            TensorAssert.Identical(before[i].Value, after![i].Value, before[i].Key);

        using var lora = LoraWeights.Load(result.LoraPath);
        var metadata = SafetensorsReader.ReadMetadata(result.LoraPath);
        Assert.Equal(("networks.lora", "4", "2.0"), (metadata["ss_network_module"], metadata["ss_network_dim"], metadata["ss_network_alpha"]));
        Assert.Contains("\"conv_dim\": \"2\"", metadata["ss_network_args"]);
        Assert.Contains("\"conv_alpha\": \"1\"", metadata["ss_network_args"]);
        Assert.Equal(("False", "lora_kohya"), (metadata["ss_network_train_unet_only"], metadata["ss_output_name"]));

        // The file holds exactly the trained parameters, which the final checkpoint keeps for resuming.
        using var state = SafetensorsReader.Open(temp.File("output/checkpoint-step-4/training_state.safetensors"));
        var modules = lora.Modules.Cast<LoraModuleWeights>().ToList();
        Assert.True(lora.TextEncoderModuleCount > 0);
        Assert.Contains(modules, m => m.Down.dim() == 4 && m.Down.shape[2] == 3 && m.Rank == 2 && m.Alpha == 1);
        Assert.Contains(modules, m => m.Key.EndsWith(".time_emb_proj", StringComparison.Ordinal) && m.Rank == 4 && m.Alpha == 2);
        Assert.Equal(state.Tensors.Count(t => t.Name.StartsWith("lora.", StringComparison.Ordinal)), 2 * modules.Count);
        foreach (var module in modules)
        {
            using var down = state.Read($"lora.{module.Key}.lora_down.weight");
            using var up = state.Read($"lora.{module.Key}.lora_up.weight");
            TensorAssert.Identical(down, module.Down, module.Key + " down");
            TensorAssert.Identical(up, module.Up, module.Key + " up");
        }

        Assert.Contains(modules, m => ModuleKeys.IsTextEncoder(m.Key) && m.Up.abs().max().item<float>() > 0);
    }

    [Fact]
    public async Task ConvertsToPeftAndBackIdenticallyAndGeneratesWithEachPartScaledApart()
    {
        using var temp = new TempDirectory();
        var result = await KohyaRun(temp).Build().TrainAsync();
        string kohya = result.LoraPath;

        Assert.Equal(0, await Cli.MainAsync(["convert", "--in", kohya, "--out", temp.File("peft.safetensors"), "--format", "peft", "--model", FixturePaths.TinyPipeline]));
        Assert.Equal(0, await Cli.MainAsync(["convert", "--in", temp.File("peft.safetensors"), "--out", temp.File("back.safetensors"), "--format", "kohya"]));
        using (var original = LoraWeights.Load(kohya))
        using (var peft = LoraWeights.Load(temp.File("peft.safetensors")))
        using (var back = LoraWeights.Load(temp.File("back.safetensors")))
        {
            Assert.Equal(LoraFileFormat.Peft, peft.SourceFormat);
            AssertSameModules(original, peft);
            AssertSameModules(original, back);
        }

        var options = new GenerationOptions { Steps = 2, Seed = 9, Width = 16, Height = 16 };
        Tensor Render(double? unet, double textEncoder = 0)
        {
            var builder = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim).WithDevice("cpu");
            if (unet is { } weight)
                builder.WithLora(kohya, weight, textEncoder);
            using var generator = builder.Build();
            using var images = generator.Generate("a sketch", options);
            return images.ImageTensor.clone();
        }

        var baseImage = Render(null);
        TensorAssert.Identical(baseImage, Render(0, 0), "LoRA weight 0");
        Assert.True(Render(1, 0).sub(baseImage).abs().max().item<float>() > 0, "the UNet part changes the image");
        Assert.True(Render(0, 1).sub(baseImage).abs().max().item<float>() > 0, "the text-encoder part changes the image");

        Assert.Equal(0, await Cli.MainAsync(["generate", "--model", FixturePaths.TinyPipeline, "--prompt", "a sketch", "--lora", kohya + ":0.8:0.5",
            "--steps", "2", "--seed", "4", "--out", temp.File("images"), "--device", "cpu"]));
        var parameters = GenerationResult.ReadParameters(Directory.GetFiles(temp.File("images"), "*.png").Single())!;
        Assert.Equal(("lora_kohya", 0.8), (parameters.Loras[0].Name, parameters.Loras[0].Weight));
    }

    [Fact]
    public async Task AKohyaNetworkWithTheTextEncoderResumesExactly()
    {
        using var temp = new TempDirectory();
        var straight = await KohyaRun(temp).Build().TrainAsync();
        var first = await KohyaRun(temp).WithMaxSteps(4).WithOutputDirectory(temp.File("resumed")).WithOptions(o => o with { MaxSteps = 2 }).Build().TrainAsync();
        Assert.Equal(2, first.StepsCompleted);
        var resumed = await KohyaRun(temp).WithOutputDirectory(temp.File("resumed")).WithResume("latest").Build().TrainAsync();
        Assert.Equal(4, resumed.StepsCompleted);
        using var a = LoraWeights.Load(straight.LoraPath);
        using var b = LoraWeights.Load(resumed.LoraPath);
        AssertSameModules(a, b);
    }

    /// <summary>Checkpoints written before LoRA lived on the layers named parameters and moments by the seed's keys; they resume to the same result.</summary>
    [Fact]
    public async Task ACheckpointInTheOldLayoutResumesExactly()
    {
        using var temp = new TempDirectory();
        LoraTrainingBuilder Seed(string output) => LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline).WithDataset(Sketches(temp)).WithResolution(16)
            .WithBatchSize(2).WithLearningRate(1e-3).WithMaxSteps(4).WithWarmupSteps(1).WithCheckpointEvery(2).WithDevice("cpu").WithSeed(5)
            .WithOutputDirectory(temp.File(output));
        var straight = await Seed("straight").Build().TrainAsync();

        await Seed("old").WithOptions(o => o with { MaxSteps = 2 }).Build().TrainAsync();
        string stateFile = temp.File("old/checkpoint-step-2/training_state.safetensors");
        var renamed = new List<KeyValuePair<string, Tensor>>();
        using (var state = SafetensorsReader.Open(stateFile))
        {
            foreach (var info in state.Tensors)
                renamed.Add(new(OldName(info.Name), state.Read(info.Name)));
        }

        Assert.Contains(renamed, e => e.Key.EndsWith(".processor.to_out_lora.up.weight.exp_avg_sq", StringComparison.Ordinal));
        SafetensorsWriter.Write(stateFile, renamed);
        var resumed = await Seed("old").WithResume("latest").Build().TrainAsync();
        Assert.Equal(File.ReadAllBytes(straight.WeightsPath!), File.ReadAllBytes(resumed.WeightsPath!));

        static string OldName(string name)
        {
            foreach (string prefix in new[] { "lora.", "optimizer." })
            {
                if (!name.StartsWith(prefix, StringComparison.Ordinal))
                    continue;
                string rest = name[prefix.Length..];
                string moment = rest.EndsWith(".exp_avg_sq", StringComparison.Ordinal) ? ".exp_avg_sq" : rest.EndsWith(".exp_avg", StringComparison.Ordinal) ? ".exp_avg" : "";
                return prefix + TestLora.SeedName(rest[..^moment.Length]) + moment;
            }

            return name;
        }
    }

    private static void AssertSameModules(LoraWeights expected, LoraWeights actual)
    {
        var byKey = actual.Modules.Cast<LoraModuleWeights>().ToDictionary(m => m.Key);
        Assert.Equal(expected.ModuleCount, actual.ModuleCount);
        foreach (var module in expected.Modules.Cast<LoraModuleWeights>())
        {
            var other = byKey[module.Key];
            TensorAssert.Identical(module.Down, other.Down.reshape(module.Down.shape), module.Key + " down");
            TensorAssert.Identical(module.Up, other.Up.reshape(module.Up.shape), module.Key + " up");
            Assert.Equal(module.Alpha, other.Alpha);
        }
    }

    private static List<KeyValuePair<string, Tensor>> Frozen(StableLora.Pipeline.StableDiffusionModel model) =>
        new[] { ("unet.", (nn.Module)model.Unet), ("text_encoder.", model.TextEncoder) }
            .SelectMany(c => StateDicts.Ordered(c.Item2).Select(e => new KeyValuePair<string, Tensor>(c.Item1 + e.Key, e.Value.detach().clone())))
            .ToList();
}
