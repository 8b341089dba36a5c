using Microsoft.Extensions.Logging.Abstractions;
using StableLora.IO;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using static TorchSharp.torch;

namespace StableLora.Tests.Pipeline;

/// <summary>Files as real SD 1.5 repositories have them, which differ from what today's diffusers writes.</summary>
public sealed class LegacyFilesTests
{
    private static readonly ComponentLoadSettings Fp32 = new(CPU, ScalarType.Float32, null, NullLogger.Instance);

    [Fact]
    public void VaeWithDiffusers06AttentionNamesAndConvShapesLoadsAndDecodesTheSame()
    {
        using var scope = NewDisposeScope();
        using var copy = new FixturePipelineCopy();
        const string File = "diffusion_pytorch_model.safetensors";
        var renamed = FixturePipelineCopy.ReadFixtureWeights("vae", File).Select(pair =>
        {
            string key = pair.Key.Replace(".to_q.", ".query.").Replace(".to_k.", ".key.").Replace(".to_v.", ".value.").Replace(".to_out.0.", ".proj_attn.");
            bool projectionWeight = key != pair.Key && key.EndsWith(".weight", StringComparison.Ordinal);
            return new KeyValuePair<string, Tensor>(key, projectionWeight ? pair.Value.unsqueeze(-1).unsqueeze(-1) : pair.Value);
        }).ToList();
        Assert.Contains(renamed, p => p.Key == "encoder.mid_block.attentions.0.query.weight" && p.Value.dim() == 4);
        SafetensorsWriter.Write(Path.Combine(copy.Component("vae"), File), renamed);

        using var legacy = ComponentLoader.LoadVae(copy.Component("vae"), Fp32);
        using var reference = ComponentLoader.LoadVae(Path.Combine(FixturePaths.TinyPipeline, "vae"), Fp32);
        using var noGrad = no_grad();
        var latents = ExpectedTensors.Read("vae.safetensors", "decode_latents");
        TensorAssert.Identical(reference.Decode(latents), legacy.Decode(latents), "decode");
    }

    [Fact]
    public void TextEncoderLoadsWithAndWithoutPositionIds()
    {
        using var scope = NewDisposeScope();
        using var copy = new FixturePipelineCopy();
        var weights = FixturePipelineCopy.ReadFixtureWeights("text_encoder", "model.safetensors");
        Assert.Contains(weights, w => w.Key == ClipTextModel.PositionIdsKey);
        weights.RemoveAll(w => w.Key == ClipTextModel.PositionIdsKey);
        SafetensorsWriter.Write(Path.Combine(copy.Component("text_encoder"), "model.safetensors"), weights);

        using var without = ComponentLoader.LoadTextEncoder(copy.Component("text_encoder"), Fp32);
        using var with = ComponentLoader.LoadTextEncoder(Path.Combine(FixturePaths.TinyPipeline, "text_encoder"), Fp32);
        using var noGrad = no_grad();
        var ids = ExpectedTensors.Read("text_encoder.safetensors", "input_ids");
        TensorAssert.Identical(with.Forward(ids).LastHiddenState, without.Forward(ids).LastHiddenState, "last_hidden_state");
    }
}
