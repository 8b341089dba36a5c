using Microsoft.Extensions.Logging.Abstractions;
using StableLora.IO;
using StableLora.Lora;
using StableLora.TextEncoder;
using StableLora.Unet;
using static TorchSharp.torch;

namespace StableLora.Tests.Infrastructure;

/// <summary>Networks for tests: from a LoRA file, or new with the seed's recipe.</summary>
internal static class TestLora
{
    public static LoraNetwork FromFile(string path, UNet2DConditionModel unet, ClipTextModel? textEncoder = null)
    {
        var content = LoraFileReader.Read(path);
        return LoraNetwork.FromWeights(new AdaptableModels(unet, textEncoder), content.Path, content.Modules, UnmatchedLoraKeys.Error, NullLogger.Instance);
    }

    public static LoraNetwork Seed(UNet2DConditionModel unet, int rank, Generator generator, StableLora.Layers.TensorSpec? spec = null) =>
        LoraNetwork.Create(new AdaptableModels(unet, null), new LoraNetworkOptions { Rank = rank }, generator, spec);

    /// <summary>The seed's name of a parameter (<c>…attn1.processor.to_q_lora.down.weight</c>) from its network name (<c>unet.…attn1.to_q.lora_down.weight</c>).</summary>
    public static string SeedName(string parameterName)
    {
        foreach (var (suffix, seed) in new[] { (".lora_down.weight", ".down.weight"), (".lora_up.weight", ".up.weight") })
        {
            if (parameterName.EndsWith(suffix, StringComparison.Ordinal))
                return LoraKeyNames.ToAttnProcs(parameterName[..^suffix.Length]) + seed;
        }

        throw new ArgumentException($"not a LoRA parameter name: {parameterName}", nameof(parameterName));
    }

    /// <summary>The kohya file key of a parameter (<c>lora_unet_…_to_q.lora_down.weight</c>) from its network name (<c>unet.….to_q.lora_down.weight</c>).</summary>
    public static string KohyaName(string parameterName)
    {
        foreach (string suffix in new[] { ".lora_down.weight", ".lora_up.weight" })
        {
            if (parameterName.EndsWith(suffix, StringComparison.Ordinal))
                return LoraKeyNames.ToKohya(parameterName[..^suffix.Length]) + suffix;
        }

        throw new ArgumentException($"not a LoRA parameter name: {parameterName}", nameof(parameterName));
    }

    /// <summary>The seed's state dict of a network (its <c>lora_weights.pt</c> keys, in order).</summary>
    public static List<KeyValuePair<string, Tensor>> SeedStateDict(LoraNetwork network) => LoraFileWriter.AttnProcsStateDict(network.ToModuleWeights());
}
