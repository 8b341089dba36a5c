using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;
using StableLora.Layers;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Lora;

/// <summary>What to do with a LoRA file's modules that match no layer of the model.</summary>
internal enum UnmatchedLoraKeys
{
    /// <summary>Refuse the file, naming the first such key.</summary>
    Error,

    /// <summary>Skip them with one warning that names and counts them (ComfyUI logs each as "lora key not loaded").</summary>
    Skip,
}

/// <summary>One adapted module of a network: its key, the layer and the adapter on it.</summary>
internal sealed record NetworkModule(string Key, IAdaptableLayer Layer, IWeightAdapter Adapter);

/// <summary>
/// A set of adapters over a UNet and (optionally) a text encoder, one per adapted layer, keyed by module key. Created
/// new for training (trainable <see cref="LoraAdapter"/>s chosen by <see cref="LoraTargetRules"/>) or from a file for
/// generation (LoRA and LoCon as <see cref="LoraAdapter"/>s, which compute exactly what the file means without merging;
/// LoHa, LoKr, Tucker, DoRA and full differences as <see cref="DeltaAdapter"/>s). <see cref="Attach"/> puts the
/// adapters on their layers; several networks can be attached at once, each with its own multipliers.
/// </summary>
internal sealed class LoraNetwork : IDisposable
{
    private readonly List<NetworkModule> _modules;
    private bool _attached;

    private LoraNetwork(List<NetworkModule> modules)
    {
        _modules = modules;
    }

    public IReadOnlyList<NetworkModule> Modules => _modules;

    public bool AdaptsTextEncoder => _modules.Any(m => ModuleKeys.IsTextEncoder(m.Key));

    public bool AdaptsUnet => _modules.Any(m => ModuleKeys.IsUnet(m.Key));

    /// <summary>The trainable LoRA adapters with their keys.</summary>
    public IEnumerable<(string Key, LoraAdapter Adapter)> LoraAdapters() =>
        _modules.Where(m => m.Adapter is LoraAdapter).Select(m => (m.Key, (LoraAdapter)m.Adapter));

    /// <summary>A new, trainable network over <paramref name="models"/>, initialised from <paramref name="generator"/> in module order.</summary>
    public static LoraNetwork Create(AdaptableModels models, LoraNetworkOptions options, Generator generator, TensorSpec? spec = null)
    {
        spec ??= new TensorSpec(models.Unet.Spec.Device, ScalarType.Float32);
        var modules = new List<NetworkModule>();
        foreach (var target in LoraTargetRules.Select(models, options))
        {
            var adapter = new LoraAdapter(target.Module.Layer, target.Settings, spec);
            adapter.Initialize(target.Initialization, generator);
            modules.Add(new NetworkModule(target.Module.Key, target.Module.Layer, adapter));
        }

        return new LoraNetwork(modules);
    }

    /// <summary>
    /// A network from a file's modules, checked against <paramref name="models"/>: each module must name a layer the
    /// models have, with matching shapes. Errors name the file and key.
    /// </summary>
    public static LoraNetwork FromWeights(AdaptableModels models, string sourcePath, IReadOnlyList<ModuleAdapterWeights> weights, UnmatchedLoraKeys unmatched,
        ILogger logger, TensorSpec? spec = null, IReadOnlyList<string>? unrecognisedKeys = null)
    {
        spec ??= new TensorSpec(models.Unet.Spec.Device, ScalarType.Float32);
        var modules = new List<NetworkModule>();
        var skipped = new List<string>(unrecognisedKeys ?? Array.Empty<string>());
        try
        {
            foreach (var module in weights)
            {
                var target = models.Find(module.Key);
                if (target is null)
                {
                    if (ModuleKeys.IsTextEncoder(module.Key) && models.TextEncoder is null)
                        throw new InvalidOperationException("a text-encoder LoRA needs the text encoder");
                    if (unmatched == UnmatchedLoraKeys.Skip)
                    {
                        skipped.Add(module.SourceKey);
                        continue;
                    }

                    throw new InvalidModelFileException(sourcePath, module.SourceKey,
                        $"the model has no layer '{module.Key}' for this {module.Kind} module (is the LoRA for another model, or use the option that skips unmatched keys)");
                }

                modules.Add(new NetworkModule(module.Key, target.Layer, CreateAdapter(sourcePath, module, target.Layer, spec)));
            }
        }
        catch
        {
            foreach (var created in modules)
                (created.Adapter as IDisposable)?.Dispose();
            throw;
        }

        if (skipped.Count > 0)
            Log.LoraKeysSkipped(logger, skipped.Count, sourcePath, string.Join(", ", skipped.Take(5)) + (skipped.Count > 5 ? ", ..." : ""));
        return new LoraNetwork(modules);
    }

    private static IWeightAdapter CreateAdapter(string sourcePath, ModuleAdapterWeights module, IAdaptableLayer layer, TensorSpec spec)
    {
        using var noGrad = no_grad();
        if (module is LoraModuleWeights { IsPlain: true } lora)
        {
            CheckLoraShapes(sourcePath, lora, layer);
            var adapter = new LoraAdapter(layer, new LoraAdapterSettings(lora.Rank, lora.Alpha), spec);
            adapter.Down.copy_(lora.Down.reshape(adapter.Down.shape));
            adapter.Up.copy_(lora.Up.reshape(adapter.Up.shape));
            adapter.eval();
            return adapter;
        }

        using var scope = NewDisposeScope();
        var delta = module.DenseDelta(layer.Weight);
        var biasDelta = module.DenseBiasDelta();
        if (biasDelta is not null && (layer.Bias is null || biasDelta.NumberOfElements != layer.Bias.NumberOfElements))
            throw new InvalidModelFileException(sourcePath, module.SourceKey, $"a bias change of {biasDelta.NumberOfElements} elements for a layer {(layer.Bias is null ? "without a bias" : $"with {layer.Bias.NumberOfElements} biases")}");
        if (!delta.isfinite().all().item<bool>())
            throw new InvalidModelFileException(sourcePath, module.SourceKey, $"the {module.Kind} module's weight change is not finite");
        return new DeltaAdapter(layer, delta, biasDelta?.reshape(layer.Bias!.shape));
    }

    private static void CheckLoraShapes(string sourcePath, LoraModuleWeights lora, IAdaptableLayer layer)
    {
        var down = lora.Down.shape;
        var up = lora.Up.shape;
        long kernel = layer.KernelSize;
        bool downFits = layer.IsConvolution
            ? (down.Length == 4 && down[1] == layer.InChannels && down[2] == kernel && down[3] == kernel) || (down.Length == 2 && kernel == 1 && down[1] == layer.InChannels)
            : down.Length == 2 && down[1] == layer.InChannels;
        if (!downFits)
            throw new InvalidModelFileException(sourcePath, lora.SourceKey, DownMismatch(lora, layer));
        bool upFits = up[0] == layer.OutChannels && up.Skip(2).All(d => d == 1) && (up.Length == 2 || (up.Length == 4 && layer.IsConvolution));
        if (!upFits)
            throw new InvalidModelFileException(sourcePath, lora.SourceKey,
                $"the up weight {IO.TensorInfo.FormatShape(up)} does not fit {lora.Key} ({layer.OutChannels} outputs)");
    }

    private static string DownMismatch(LoraModuleWeights lora, IAdaptableLayer layer)
    {
        string expected = layer.IsConvolution ? $"[r, {layer.InChannels}, {layer.KernelSize}, {layer.KernelSize}]" : $"[r, {layer.InChannels}]";
        string message = $"the down weight {IO.TensorInfo.FormatShape(lora.Down.shape)} does not fit {lora.Key}, which takes {expected}";
        bool textWidth = lora.Key.Contains(".attn2.to_k", StringComparison.Ordinal) || lora.Key.Contains(".attn2.to_v", StringComparison.Ordinal);
        long inputs = lora.Down.shape.Length > 1 ? lora.Down.shape[1] : 0;
        if (textWidth && inputs == 1024 && layer.InChannels == 768)
            return message + ": the LoRA expects 1024-dim text embeddings; it was made for SD 2.x and this model is SD 1.x.";
        if (textWidth && inputs == 768 && layer.InChannels == 1024)
            return message + ": the LoRA expects 768-dim text embeddings; it was made for SD 1.x and this model is SD 2.x.";
        if (textWidth && inputs == 2048)
            return message + ": the LoRA expects 2048-dim text embeddings; it was made for SDXL.";
        return message;
    }

    /// <summary>Puts the adapters on their layers (each keeps its multiplier).</summary>
    public void Attach()
    {
        if (_attached)
            return;
        foreach (var module in _modules)
            module.Layer.Adapters.Add(module.Adapter);
        _attached = true;
    }

    /// <summary>Takes the adapters off their layers.</summary>
    public void Detach()
    {
        if (!_attached)
            return;
        foreach (var module in _modules)
            module.Layer.Adapters.Remove(module.Adapter);
        _attached = false;
    }

    /// <summary>Sets the strength of the UNet's and the text encoder's adapters.</summary>
    public void SetMultipliers(double unet, double textEncoder)
    {
        foreach (var module in _modules)
            module.Adapter.Multiplier = ModuleKeys.IsTextEncoder(module.Key) ? textEncoder : unet;
    }

    /// <summary>The weight this network is fused into its layers with, or null when it is not fused.</summary>
    public double? FusedWeight { get; private set; }

    /// <summary>
    /// Adds weight x each module's dense change into its layer's weight (diffusers' <c>fuse_lora</c>), so the model
    /// computes the adapted output with no extra work per call; the adapters must not be attached meanwhile. Refuses
    /// (and changes nothing) when any change is not finite.
    /// </summary>
    public void Fuse(double weight = 1.0)
    {
        if (FusedWeight is not null)
            throw new InvalidOperationException("this LoRA is already fused");
        if (_attached)
            throw new InvalidOperationException("detach the LoRA before fusing it");
        using var noGrad = no_grad();
        foreach (var module in _modules)
        {
            using var scope = NewDisposeScope();
            if (!DeltaOf(module, weight).isfinite().all().item<bool>())
                throw new InvalidOperationException($"fusing {module.Key} would write non-finite values into the model; nothing was fused");
        }

        foreach (var module in _modules)
        {
            using var scope = NewDisposeScope();
            var target = module.Layer.Weight;
            target.PlusInPlace(DeltaOf(module, weight).to(target.dtype));
        }

        FusedWeight = weight;
    }

    /// <summary>Subtracts what <see cref="Fuse"/> added (the base weights come back within float rounding).</summary>
    public void Unfuse()
    {
        if (FusedWeight is not { } weight)
            throw new InvalidOperationException("this LoRA is not fused");
        using var noGrad = no_grad();
        foreach (var module in _modules)
        {
            using var scope = NewDisposeScope();
            var target = module.Layer.Weight;
            target.sub_(DeltaOf(module, weight).to(target.dtype));
        }

        FusedWeight = null;
    }

    private static Tensor DeltaOf(NetworkModule module, double weight) => module.Adapter switch
    {
        LoraAdapter lora => lora.DeltaWeight(weight, module.Layer.Weight.shape),
        DeltaAdapter delta => delta.Delta.to(float64).Times(weight),
        _ => throw new InvalidOperationException($"{module.Key}: this adapter cannot be fused"),
    };

    /// <summary>Every trainable parameter, named <c>&lt;module key&gt;.lora_down.weight</c> / <c>.lora_up.weight</c>, in module order.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedParameters() =>
        LoraAdapters().SelectMany(a => new[] { ($"{a.Key}.lora_down.weight", a.Adapter.Down), ($"{a.Key}.lora_up.weight", a.Adapter.Up) });

    /// <summary>The trainable adapters in format-neutral form (for files); tensors are detached views.</summary>
    public List<LoraModuleWeights> ToModuleWeights() =>
        LoraAdapters().Select(a => new LoraModuleWeights(a.Key, a.Adapter.Down.detach(), a.Adapter.Up.detach(), a.Adapter.Alpha, a.Key)).ToList();

    /// <summary>Puts every LoRA adapter in training or evaluation mode (dropouts).</summary>
    public void Train(bool training)
    {
        foreach (var (_, adapter) in LoraAdapters())
            adapter.train(training);
    }

    public void Dispose()
    {
        Detach();
        foreach (var module in _modules)
            (module.Adapter as IDisposable)?.Dispose();
    }
}
