using Microsoft.Extensions.Logging.Abstractions;
using StableLora.IO;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.Unet;
using static TorchSharp.torch;

namespace StableLora.Tests.Pipeline;

public sealed class ComponentLoadingTests
{
    private const string UnetFile = "diffusion_pytorch_model.safetensors";
    private static readonly ComponentLoadSettings Fp32 = new(CPU, ScalarType.Float32, null, NullLogger.Instance);

    [Fact]
    public void LoadsUnetFromPyTorchBinWithIdenticalWeights()
    {
        using var scope = NewDisposeScope();
        using var copy = new FixturePipelineCopy();
        copy.RemoveWeights("unet");
        TorchPickleWriter.Write(Path.Combine(copy.Component("unet"), "diffusion_pytorch_model.bin"), FixturePipelineCopy.ReadFixtureWeights("unet", UnetFile));

        using var fromBin = ComponentLoader.LoadUnet(copy.Component("unet"), Fp32);
        using var fromSafetensors = ComponentLoader.LoadUnet(Path.Combine(FixturePaths.TinyPipeline, "unet"), Fp32);
        AssertSameWeights(fromSafetensors, fromBin);
    }

    [Fact]
    public void LoadsFp16VariantWhenAskedAndConvertsToModelDType()
    {
        using var scope = NewDisposeScope();
        using var copy = new FixturePipelineCopy();
        var halfWeights = FixturePipelineCopy.ReadFixtureWeights("unet", UnetFile)
            .Select(p => new KeyValuePair<string, Tensor>(p.Key, p.Value.to(ScalarType.Float16))).ToList();
        SafetensorsWriter.Write(Path.Combine(copy.Component("unet"), "diffusion_pytorch_model.fp16.safetensors"), halfWeights);

        using var unet = ComponentLoader.LoadUnet(copy.Component("unet"), Fp32 with { Variant = "fp16" });
        var loaded = unet.state_dict();
        foreach (var (name, half) in halfWeights)
        {
            Assert.Equal(ScalarType.Float32, loaded[name].dtype);
            TensorAssert.Identical(half.to(ScalarType.Float32), loaded[name], name);
        }
    }

    [Fact]
    public void LoadsShardedSafetensorsThroughTheIndex()
    {
        using var scope = NewDisposeScope();
        using var copy = new FixturePipelineCopy();
        copy.RemoveWeights("unet");
        var weights = FixturePipelineCopy.ReadFixtureWeights("unet", UnetFile);
        int half = weights.Count / 2;
        string directory = copy.Component("unet");
        SafetensorsWriter.Write(Path.Combine(directory, "diffusion_pytorch_model-00001-of-00002.safetensors"), weights.Take(half));
        SafetensorsWriter.Write(Path.Combine(directory, "diffusion_pytorch_model-00002-of-00002.safetensors"), weights.Skip(half));
        var map = weights.Select((w, i) => $"\"{w.Key}\": \"diffusion_pytorch_model-0000{(i < half ? 1 : 2)}-of-00002.safetensors\"");
        File.WriteAllText(Path.Combine(directory, "diffusion_pytorch_model.safetensors.index.json"),
            "{\"metadata\": {}, \"weight_map\": {" + string.Join(",", map) + "}}");

        using var sharded = ComponentLoader.LoadUnet(directory, Fp32);
        using var reference = ComponentLoader.LoadUnet(Path.Combine(FixturePaths.TinyPipeline, "unet"), Fp32);
        AssertSameWeights(reference, sharded);
    }

    [Fact]
    public void MissingKeyIsAnErrorNamingIt()
    {
        string key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
        var error = LoadRewrittenUnet(weights => weights.RemoveAll(w => w.Key == key));
        Assert.Contains(key, error.MissingKeys.Single());
        Assert.Contains(key, error.Message);
        Assert.Contains("[64, 32]", error.Message);
    }

    [Fact]
    public void UnexpectedKeyIsAnErrorNamingIt()
    {
        var error = LoadRewrittenUnet(weights => weights.Add(new("mid_block.extra_layer.weight", zeros(3, 3))));
        Assert.Contains("mid_block.extra_layer.weight", error.UnexpectedKeys.Single());
        Assert.Contains("mid_block.extra_layer.weight", error.Message);
    }

    [Fact]
    public void WrongShapeIsAnErrorNamingKeyAndBothShapes()
    {
        string key = "conv_in.weight";
        var error = LoadRewrittenUnet(weights =>
        {
            int index = weights.FindIndex(w => w.Key == key);
            weights[index] = new(key, zeros(32, 4, 1, 1));
        });
        Assert.Equal(key, error.Key);
        Assert.Contains("'conv_in.weight' is [32, 4, 1, 1] in the file but [32, 4, 3, 3] in the model", error.Message);
    }

    [Fact]
    public void UnsupportedBlockTypeIsAConfigErrorNamingKeyAndValue()
    {
        string json = File.ReadAllText(Path.Combine(FixturePaths.TinyPipeline, "unet", "config.json"))
            .Replace("\"DownBlock2D\"", "\"SimpleCrossAttnDownBlock2D\"", StringComparison.Ordinal);
        var error = Assert.Throws<ModelConfigException>(() => UNet2DConditionConfig.FromJson(json, "unet/config.json"));
        Assert.Equal("down_block_types", error.Key);
        Assert.Contains("SimpleCrossAttnDownBlock2D", error.Message);
    }

    [Fact]
    public void UnimplementedArchitectureSwitchIsRefused()
    {
        string json = File.ReadAllText(Path.Combine(FixturePaths.TinyPipeline, "unet", "config.json"))
            .Replace("\"class_embed_type\": null", "\"class_embed_type\": \"timestep\"", StringComparison.Ordinal);
        var error = Assert.Throws<ModelConfigException>(() => UNet2DConditionConfig.FromJson(json, "unet/config.json"));
        Assert.Equal("class_embed_type", error.Key);
        Assert.Equal("\"timestep\"", error.Value);
    }

    private static StateDictMismatchException LoadRewrittenUnet(Action<List<KeyValuePair<string, Tensor>>> rewrite)
    {
        using var scope = NewDisposeScope();
        using var copy = new FixturePipelineCopy();
        var weights = FixturePipelineCopy.ReadFixtureWeights("unet", UnetFile);
        rewrite(weights);
        SafetensorsWriter.Write(Path.Combine(copy.Component("unet"), UnetFile), weights);
        return Assert.Throws<StateDictMismatchException>(() => ComponentLoader.LoadUnet(copy.Component("unet"), Fp32));
    }

    private static void AssertSameWeights(UNet2DConditionModel expected, UNet2DConditionModel actual)
    {
        var a = actual.state_dict();
        foreach (var (name, tensor) in expected.state_dict())
            TensorAssert.Identical(tensor, a[name], name);
    }
}
