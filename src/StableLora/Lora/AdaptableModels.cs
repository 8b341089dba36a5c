using StableLora.Layers;
using StableLora.TextEncoder;
using StableLora.Unet;
using TorchSharp;

namespace StableLora.Lora;

/// <summary>One Linear or Conv2d that adapters can attach to, with its key and the block it belongs to.</summary>
/// <param name="Key">The module key (<see cref="ModuleKeys"/>).</param>
/// <param name="Layer">The layer.</param>
/// <param name="Block">The nearest enclosing block that LoRA target rules name (a Transformer2DModel, ResnetBlock2D, CLIP attention, ...), or null.</param>
internal sealed record AdaptableModule(string Key, IAdaptableLayer Layer, torch.nn.Module? Block)
{
    /// <summary>A convolution with a kernel larger than 1x1 (kohya's conv rank applies).</summary>
    public bool IsSpatialConvolution => Layer.IsConvolution && Layer.KernelSize > 1;
}

/// <summary>
/// The models LoRA adapts, the UNet and (when given) the text encoder, with every Linear and Conv2d they hold, keyed
/// by <see cref="ModuleKeys"/> in module order.
/// </summary>
internal sealed class AdaptableModels
{
    private readonly Dictionary<string, AdaptableModule> _byKey = new(StringComparer.Ordinal);

    public AdaptableModels(UNet2DConditionModel unet, ClipTextModel? textEncoder)
    {
        Unet = unet;
        TextEncoder = textEncoder;
        var modules = new List<AdaptableModule>();
        Collect(unet, ModuleKeys.Unet, modules, IsUnetBlock);
        if (textEncoder is not null)
            Collect(textEncoder, ModuleKeys.TextEncoder, modules, IsTextEncoderBlock);
        Modules = modules;
        foreach (var module in modules)
            _byKey[module.Key] = module;
    }

    public UNet2DConditionModel Unet { get; }

    public ClipTextModel? TextEncoder { get; }

    /// <summary>Every adaptable layer in module order, the UNet's first.</summary>
    public IReadOnlyList<AdaptableModule> Modules { get; }

    public AdaptableModule? Find(string key) => _byKey.GetValueOrDefault(key);

    /// <summary>The blocks kohya's <c>UNET_TARGET_REPLACE_MODULE</c> names.</summary>
    public static bool IsTransformerBlock(torch.nn.Module? block) => block is Transformer2DModel;

    /// <summary>The blocks kohya's <c>UNET_TARGET_REPLACE_MODULE_CONV2D_3X3</c> names (LoCon).</summary>
    public static bool IsConvolutionBlock(torch.nn.Module? block) => block is ResnetBlock2D or Downsample2D or Upsample2D;

    /// <summary>The blocks kohya's <c>TEXT_ENCODER_TARGET_REPLACE_MODULE</c> names.</summary>
    public static bool IsTextEncoderBlock(torch.nn.Module? block) => block is ClipAttention or ClipMlp;

    private static bool IsUnetBlock(torch.nn.Module module) => IsTransformerBlock(module) || IsConvolutionBlock(module);

    private static void Collect(torch.nn.Module root, string component, List<AdaptableModule> into, Func<torch.nn.Module, bool> isBlock)
    {
        // named_modules() walks depth-first in registration order, so a block comes before its layers.
        var blocks = new List<(string Path, torch.nn.Module Block)>();
        foreach (var (name, module) in root.named_modules())
        {
            if (isBlock(module))
                blocks.Add((name, module));
            if (module is not IAdaptableLayer layer)
                continue;
            var block = blocks.LastOrDefault(b => name.StartsWith(b.Path + ".", StringComparison.Ordinal));
            into.Add(new AdaptableModule($"{component}.{name}", layer, block.Block));
        }
    }
}
