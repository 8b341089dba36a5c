using System.IO.Compression;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Lora;
using StableLora.IO;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.Unet;
using StableLora.Unet;
using static TorchSharp.torch;

namespace StableLora.Tests.Lora;

public sealed class LoraFormatTests
{
    private static string FixtureLora => Path.Combine(FixturePaths.TinySd, "lora_weights.pt");

    [Fact]
    public void SeedPtWrittenAndReadBackIsIdenticalWithTheFixtureKeyListAndTorchArchiveLayout()
    {
        using var scope = NewDisposeScope();
        using var temp = new TempDirectory();
        using var lora = LoraWeights.Load(FixtureLora);
        Assert.Equal(LoraFileFormat.AttnProcs, lora.SourceFormat);
        string written = temp.File("lora_weights.pt");
        lora.Save(written, LoraFileFormat.AttnProcs);

        using var original = TorchPickleReader.Open(FixtureLora);
        using var roundTrip = TorchPickleReader.Open(written);
        var expectedKeys = FixtureCases.Case("unet_lora").GetProperty("lora_state_dict_keys").EnumerateArray().Select(k => k.GetString()).ToList();
        Assert.Equal(expectedKeys, roundTrip.Tensors.Select(t => t.Name));
        foreach (var info in original.Tensors)
        {
            using var a = original.Read(info.Name);
            using var b = roundTrip.Read(info.Name);
            TensorAssert.Identical(a, b, info.Name);
        }

        using var zip = ZipFile.OpenRead(written);
        var names = zip.Entries.Select(e => e.FullName).ToList();
        string prefix = names.Single(n => n.EndsWith("/data.pkl", StringComparison.Ordinal))[..^"data.pkl".Length];
        Assert.Contains(prefix + "version", names);
        Assert.Equal(176, names.Count(n => n.StartsWith(prefix + "data/", StringComparison.Ordinal)));
    }

    [Theory]
    [InlineData(LoraFileFormat.Kohya)]
    [InlineData(LoraFileFormat.Peft)]
    [InlineData(LoraFileFormat.AttnProcs)]
    public void ExportReimportsToIdenticalTensors(LoraFileFormat format)
    {
        using var scope = NewDisposeScope();
        using var temp = new TempDirectory();
        using var lora = LoraWeights.Load(FixtureLora);
        string path = temp.File(format == LoraFileFormat.AttnProcs ? "lora.pt" : "lora.safetensors");
        lora.Save(path, format, new LoraExportMetadata { OutputName = "fixture", TrainingSteps = 3, Resolution = 16 });
        using var back = LoraWeights.Load(path);
        Assert.Equal(format, back.SourceFormat);
        AssertSameLayers(lora, back);
    }

    [Fact]
    public void AlphaSurvivesKohyaAndPeftAndIsFoldedIntoUpForThePt()
    {
        using var scope = NewDisposeScope();
        using var temp = new TempDirectory();
        using var unet = UnetParityTests.LoadFixtureUnet();
        using var generator = new Generator(9);
        var models = new AdaptableModels(unet, null);
        using var network = LoraNetwork.Create(models, new LoraNetworkOptions { Rank = 4, Alpha = 2.0 }, generator);
        using (no_grad())
        {
            foreach (var (_, adapter) in network.LoraAdapters())
                adapter.Up.normal_(0, 0.1, generator);
        }

        var sample = ExpectedTensors.Read("unet.safetensors", "sample");
        var timesteps = ExpectedTensors.Read("unet.safetensors", "timesteps_int");
        var context = ExpectedTensors.Read("unet.safetensors", "encoder_hidden_states");
        Tensor Output(LoraNetwork adapter)
        {
            adapter.Attach();
            using var noGrad = no_grad();
            var output = unet.Forward(sample, timesteps, context);
            adapter.Detach();
            return output;
        }

        var expected = Output(network);
        using var lora = LoraWeights.FromNetwork(network);
        foreach (var format in new[] { LoraFileFormat.Kohya, LoraFileFormat.Peft, LoraFileFormat.AttnProcs })
        {
            string path = temp.File($"alpha-{format}.{(format == LoraFileFormat.AttnProcs ? "pt" : "safetensors")}");
            lora.Save(path, format);
            using var back = LoraWeights.Load(path);
            Assert.Equal(format == LoraFileFormat.AttnProcs ? 4.0 : 2.0, back.Alpha);
            using var reloaded = back.CreateNetwork(models, UnmatchedLoraKeys.Error, NullLogger.Instance);
            TensorAssert.Close(expected, Output(reloaded), new Tolerance(1e-6, 1e-6), format.ToString());
        }
    }

    [Fact]
    public void KohyaExportCarriesTheMetadataKohyaWrites()
    {
        using var temp = new TempDirectory();
        using var lora = LoraWeights.Load(FixtureLora);
        string path = temp.File("lora.safetensors");
        lora.Save(path, LoraFileFormat.Kohya, new LoraExportMetadata { OutputName = "my_lora", BaseModel = "runwayml/stable-diffusion-v1-5", TrainingSteps = 500, Resolution = 512, LearningRate = 1e-4, ImageCount = 12 });
        var metadata = SafetensorsReader.ReadMetadata(path);
        Assert.Equal("networks.lora", metadata["ss_network_module"]);
        Assert.Equal("4", metadata["ss_network_dim"]);
        Assert.Equal("4.0", metadata["ss_network_alpha"]);
        Assert.Equal("sd_v1", metadata["ss_base_model_version"]);
        Assert.Equal("500", metadata["ss_steps"]);
        Assert.Equal("(512, 512)", metadata["ss_resolution"]);
        Assert.Equal("my_lora", metadata["ss_output_name"]);
        Assert.Equal("runwayml/stable-diffusion-v1-5", metadata["ss_sd_model_name"]);
        Assert.Matches("^[0-9a-f]{64}$", metadata["sshs_model_hash"]);
        Assert.Matches("^[0-9a-f]{8}$", metadata["sshs_legacy_hash"]);

        // sshs_model_hash is sha256 of the tensor data, which the stored metadata does not change.
        using var stream = File.OpenRead(path);
        var length = new byte[8];
        stream.ReadExactly(length);
        stream.Position = 8 + (long)BitConverter.ToUInt64(length);
        Assert.Equal(metadata["sshs_model_hash"], Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(stream)).ToLowerInvariant());
    }

    [Fact]
    public void NamingMatchesEverySd15LoraKeyInEveryFormat()
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FixturePaths.Sd15Keys, "lora_keys.json")));
        var entries = document.RootElement.GetProperty("state_dict").EnumerateObject().ToList();
        Assert.Equal(256, entries.Count);
        using var unet = new UNet2DConditionModel(Sd15Presets.Unet, new TensorSpec(META, ScalarType.Float32));
        using var generator = new Generator(1);
        using var network = LoraNetwork.Create(new AdaptableModels(unet, null), new LoraNetworkOptions { Rank = 4 }, generator, new TensorSpec(META, ScalarType.Float32));
        var ours = LoraFileWriter.AttnProcsStateDict(network.ToModuleWeights());
        Assert.Equal(entries.Select(e => e.Name), ours.Select(e => e.Key));
        foreach (var (entry, (_, tensor)) in entries.Zip(ours))
        {
            var value = entry.Value;
            string module = value.GetProperty("module").GetString()!;
            Assert.Equal(value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()), tensor.shape);
            bool isDown = entry.Name.EndsWith(".down.weight", StringComparison.Ordinal);
            string key = ModuleKeys.ForUnet(module);
            Assert.Equal(value.GetProperty("kohya").GetString(), LoraKeyNames.ToKohya(key) + (isDown ? ".lora_down.weight" : ".lora_up.weight"));
            Assert.Equal(value.GetProperty("kohya_alpha").GetString(), LoraKeyNames.ToKohya(key) + ".alpha");
            Assert.Equal(key, LoraKeyNames.FromKohya(LoraKeyNames.ToKohya(key)));
            Assert.Equal(value.GetProperty("peft").GetString(), $"unet.{module}.{(isDown ? "lora_A" : "lora_B")}.weight");
            Assert.Equal(value.GetProperty("diffusers").GetString(), $"unet.{module}.lora.{(isDown ? "down" : "up")}.weight");
        }
    }

    [Fact]
    public void MismatchedRanksAreAClearError()
    {
        using var temp = new TempDirectory();
        string path = temp.File("bad.safetensors");
        string name = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q";
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor>
        {
            [$"{name}.lora_down.weight"] = zeros(4, 64),
            [$"{name}.lora_up.weight"] = zeros(64, 8),
        });
        var error = Assert.Throws<InvalidModelFileException>(() => LoraWeights.Load(path));
        Assert.Equal($"{name}.lora_down.weight", error.Key);
        Assert.Contains("rank mismatch", error.Message);
    }

    [Fact]
    public void Sd2LoraOnSd1ModelSaysSo()
    {
        using var temp = new TempDirectory();
        string path = temp.File("sd2.safetensors");
        string name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor>
        {
            [$"{name}.lora_down.weight"] = zeros(4, 1024),
            [$"{name}.lora_up.weight"] = zeros(320, 4),
            [$"{name}.alpha"] = tensor(4f),
        });
        using var lora = LoraWeights.Load(path);
        using var unet = new UNet2DConditionModel(Sd15Presets.Unet, new TensorSpec(META, ScalarType.Float32));
        var error = Assert.Throws<InvalidModelFileException>(() =>
            lora.CreateNetwork(new AdaptableModels(unet, null), UnmatchedLoraKeys.Error, NullLogger.Instance, new TensorSpec(META, ScalarType.Float32)));
        Assert.Contains("made for SD 2.x", error.Message);
        Assert.Equal($"{name}.lora_down.weight", error.Key);
    }

    [Fact]
    public void UnknownModuleAndNonTensorEntriesAreErrorsNamingTheKey()
    {
        using var temp = new TempDirectory();
        string path = temp.File("ff.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor>
        {
            ["lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_gate_2.lora_down.weight"] = zeros(4, 256),
            ["lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_gate_2.lora_up.weight"] = zeros(64, 4),
        });
        var error = Assert.Throws<InvalidModelFileException>(() => LoraWeights.Load(path));
        Assert.Contains("ff_gate_2", error.Key);

        string pt = temp.File("extra.pt");
        var stateDict = new System.Collections.Specialized.OrderedDictionary
        {
            ["mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"] = zeros(4, 64),
            ["mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight"] = zeros(64, 4),
            ["global_step"] = 1000L,
        };
        using (var stream = File.Create(pt))
            TorchSharp.PyBridge.PyTorchPickler.PickleStateDict(stream, stateDict);
        var nonTensor = Assert.Throws<InvalidModelFileException>(() => LoraWeights.Load(pt));
        Assert.Equal("global_step", nonTensor.Key);
    }

    [Fact]
    public void FusedLoraEqualsTheUnfusedPathAndUnfuseRestoresTheBase()
    {
        using var scope = NewDisposeScope();
        using var unet = UnetParityTests.LoadFixtureUnet();
        var baseWeights = StateDicts.Ordered(unet).Select(e => new KeyValuePair<string, Tensor>(e.Key, e.Value.clone())).ToList();
        using var lora = LoraWeights.Load(FixtureLora);
        using var network = lora.CreateNetwork(new AdaptableModels(unet, null), UnmatchedLoraKeys.Error, NullLogger.Instance);
        var sample = ExpectedTensors.Read("unet.safetensors", "sample");
        var timesteps = ExpectedTensors.Read("unet.safetensors", "timesteps_int");
        var context = ExpectedTensors.Read("unet.safetensors", "encoder_hidden_states");
        using var noGrad = no_grad();
        network.SetMultipliers(0.7, 0.7);
        network.Attach();
        var unfused = unet.Forward(sample, timesteps, context);
        network.Detach();

        network.Fuse(0.7);
        TensorAssert.Close(unfused, unet.Forward(sample, timesteps, context), new Tolerance(1e-5, 1e-5), "fused");
        network.Unfuse();
        var restored = StateDicts.Ordered(unet);
        for (int i = 0; i < baseWeights.Count; i++)
            TensorAssert.Close(baseWeights[i].Value, restored[i].Value, new Tolerance(1e-6, 1e-6), baseWeights[i].Key);
    }

    private static void AssertSameLayers(LoraWeights expected, LoraWeights actual)
    {
        var byKey = actual.Modules.Cast<LoraModuleWeights>().ToDictionary(m => m.Key);
        Assert.Equal(expected.ModuleCount, actual.ModuleCount);
        foreach (var module in expected.Modules.Cast<LoraModuleWeights>())
        {
            var other = byKey[module.Key];
            TensorAssert.Identical(module.Down, other.Down, module.Key + " down");
            TensorAssert.Identical(module.Up, other.Up, module.Key + " up");
            Assert.Equal(module.Alpha, other.Alpha);
        }
    }
}
