using System.Text.Json;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// The EMA of the LoRA weights (issue 15, item 3): diffusers' EMAModel arithmetic on a fixture its own code wrote
/// (Fixtures/ema/ema.json, tools/generate_ema_fixtures.py), the -ema files loading as ordinary LoRAs, and resume bit for
/// bit with the EMA on.
/// </summary>
public sealed class LoraEmaTests
{
    private static readonly Lazy<JsonDocument> Fixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(FixturePaths.Root, "ema", "ema.json"))));

    public static IEnumerable<object[]> Cases() => Enumerable.Range(0, Fixture.Value.RootElement.GetProperty("cases").GetArrayLength()).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Cases))]
    public void DecaysAndShadowWeightsEqualDiffusersEmaModel(int index)
    {
        using var scope = NewDisposeScope();
        var root = Fixture.Value.RootElement;
        var c = root.GetProperty("cases")[index];
        var s = c.GetProperty("settings");
        var settings = new EmaSettings(s.GetProperty("decay").GetDouble(), s.TryGetProperty("use_ema_warmup", out var w) && w.GetBoolean(),
            s.TryGetProperty("power", out var power) ? power.GetDouble() : 2.0 / 3.0);
        var shapes = root.GetProperty("shapes").EnumerateArray().Select(a => a.EnumerateArray().Select(d => d.GetInt64()).ToArray()).ToArray();
        var parameters = root.GetProperty("initial").EnumerateArray()
            .Select((values, i) => ($"p{i}", new Parameter(Values(values).reshape(shapes[i])))).ToList();
        using var ema = new LoraEma(parameters, settings);
        var deltas = root.GetProperty("deltas");
        for (int step = 0; step < deltas.GetArrayLength(); step++)
        {
            using (no_grad())
            {
                for (int i = 0; i < parameters.Count; i++)
                    parameters[i].Item2.add_(Values(deltas[step][i]).reshape(shapes[i]));
            }

            ema.Update();
            Assert.Equal(c.GetProperty("decays")[step].GetDouble(), ema.DecayOf(ema.Updates));
            var shadows = ema.StateTensors();
            for (int i = 0; i < parameters.Count; i++)
                TensorAssert.Identical(Values(c.GetProperty("shadows")[step][i]).reshape(shapes[i]), shadows[i].Value, $"{s.GetRawText()} step {step + 1} p{i}");
        }
    }

    [Fact]
    public async Task EmaFilesLoadAsLorasAndResumeBitForBit()
    {
        using var temp = new TempDirectory();
        LoraTrainingBuilder Run(string output, int every = 2) => LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = Sketches(temp), Caption = "a sketch", OutputDirectory = temp.File(output), Resolution = 16, BatchSize = 2,
                LearningRate = 1e-3, MaxSteps = 12, WarmupSteps = 2, CheckpointEvery = 6, Device = "cpu", Seed = 3,
            })
            .WithLoraEma(0.9, updateEvery: every, warmup: true);

        var straight = await Run("straight").Build().TrainAsync();
        Assert.Equal(temp.File("straight/lora_kohya-ema.safetensors"), straight.EmaKohyaWeightsPath);
        Assert.Equal(temp.File("straight/lora_weights-ema.pt"), straight.EmaWeightsPath);
        using (var raw = LoraWeights.Load(straight.KohyaWeightsPath))
        using (var ema = LoraWeights.Load(straight.EmaKohyaWeightsPath!))
        {
            Assert.Equal(raw.ModuleCount, ema.ModuleCount);
            Assert.NotEqual(TestFiles.Hash(straight.KohyaWeightsPath), TestFiles.Hash(straight.EmaKohyaWeightsPath!));
        }

        var options = new GenerationOptions { Width = 16, Height = 16, Steps = 2, Seed = 1 };
        using (var withEma = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithDevice("cpu").WithLora(straight.EmaWeightsPath!).Build())
        using (var withRaw = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithDevice("cpu").WithLora(straight.WeightsPath!).Build())
        using (var emaImage = withEma.Generate("a sketch", options))
        using (var rawImage = withRaw.Generate("a sketch", options))
            Assert.False(TensorAssert.BitEqual(emaImage.ImageTensor, rawImage.ImageTensor), "the EMA's LoRA is not the trained one");

        var resumed = await Run("resumed").WithResume(temp.File("straight/checkpoint-step-6")).Build().TrainAsync();
        Assert.Equal(TestFiles.Hash(straight.KohyaWeightsPath), TestFiles.Hash(resumed.KohyaWeightsPath));
        Assert.Equal(TestFiles.Hash(straight.EmaKohyaWeightsPath!), TestFiles.Hash(resumed.EmaKohyaWeightsPath!));
        Assert.Equal(TestFiles.Hash(straight.EmaWeightsPath!), TestFiles.Hash(resumed.EmaWeightsPath!));

        // A different update cadence gives a different EMA from the same trained weights.
        var everyStep = await Run("every-step", every: 1).Build().TrainAsync();
        Assert.Equal(TestFiles.Hash(straight.KohyaWeightsPath), TestFiles.Hash(everyStep.KohyaWeightsPath));
        Assert.NotEqual(TestFiles.Hash(straight.EmaKohyaWeightsPath!), TestFiles.Hash(everyStep.EmaKohyaWeightsPath!));
    }

    [Fact]
    public async Task EmaOnlyWritesOnlyTheEmaFilesAndACheckpointWithoutEmaCannotContinueOne()
    {
        using var temp = new TempDirectory();
        LoraTrainingBuilder Run(string output) => LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline)
            .WithOptions(o => o with
            {
                DataDirectory = Sketches(temp), OutputDirectory = temp.File(output), Resolution = 16, BatchSize = 2, MaxSteps = 4, WarmupSteps = 0,
                CheckpointEvery = 2, Device = "cpu", Seed = 3,
            });

        var emaOnly = await Run("ema-only").WithLoraEma(0.99, emaFilesOnly: true).Build().TrainAsync();
        Assert.Equal(emaOnly.EmaKohyaWeightsPath, emaOnly.KohyaWeightsPath);
        Assert.False(File.Exists(temp.File("ema-only/lora_kohya.safetensors")));
        Assert.True(File.Exists(temp.File("ema-only/lora_kohya-ema.safetensors")));

        await Run("plain").Build().TrainAsync();
        var error = await Assert.ThrowsAsync<InvalidOptionsException>(() => Run("continued").WithLoraEma(0.99).WithResume(temp.File("plain/checkpoint-step-2")).Build().TrainAsync());
        Assert.Contains(nameof(LoraTrainingOptions.LoraEmaDecay), error.Message, StringComparison.Ordinal);

        var errors = new LoraTrainingOptions { Model = "m", DataDirectory = ".", OutputDirectory = "o", LoraEmaDecay = 1.5, LoraEmaUpdateEvery = 0, LoraEmaOnly = true }
            .Validate(false).Select(e => e.Option).ToList();
        Assert.Contains(nameof(LoraTrainingOptions.LoraEmaDecay), errors);
        Assert.Contains(nameof(LoraTrainingOptions.LoraEmaUpdateEvery), errors);
        Assert.Contains(nameof(LoraTrainingOptions.LoraEmaOnly), new LoraTrainingOptions { Model = "m", DataDirectory = ".", OutputDirectory = "o", LoraEmaOnly = true }
            .Validate(false).Select(e => e.Option));
    }

    private static string Sketches(TempDirectory temp)
    {
        string sketches = temp.File("sketches");
        if (!Directory.Exists(sketches))
            StableLora.Data.SketchImageGenerator.Generate(sketches, count: 4, size: 24, seed: 5);
        return sketches;
    }

    private static Tensor Values(JsonElement array) => tensor(array.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray());
}
