using StableLora.IO;
using StableLora.Layers;
using StableLora.Unet;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.AttentionProcessors;

/// <summary>The shape of a new LoRA adapter.</summary>
/// <param name="Rank">The inner dimension of every LoRA layer.</param>
/// <param name="Alpha">Scale numerator: each layer adds alpha / rank * up(down(x)). Null means alpha = rank (scale 1), as the seed.</param>
/// <param name="Targets">Which projections get layers.</param>
/// <param name="AttentionKinds">Which attentions get layers.</param>
/// <param name="Dropout">Dropout on the layers' input while training.</param>
internal sealed record LoraNetworkOptions(int Rank = 4, double? Alpha = null, LoraTargets Targets = LoraTargets.All,
    LoraAttentionKinds AttentionKinds = LoraAttentionKinds.All, double Dropout = 0.0)
{
    public double EffectiveAlpha => Alpha ?? Rank;
}

/// <summary>
/// One LoRA adapter over a UNet's attentions (the counterpart of diffusers' <c>AttnProcsLayers</c>): an ordered map
/// from each attention processor name to its <see cref="LoraAttnLayers"/>. Its state dict uses the seed's key names
/// (<c>down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight</c>, ...) in
/// <c>unet.attn_processors</c> order.
/// </summary>
internal sealed class LoraNetwork : IDisposable
{
    private readonly List<(string ProcessorName, LoraAttnLayers Layers)> _processors;

    public LoraNetwork(IEnumerable<(string ProcessorName, LoraAttnLayers Layers)> processors)
    {
        _processors = processors.ToList();
    }

    public IReadOnlyList<(string ProcessorName, LoraAttnLayers Layers)> Processors => _processors;

    /// <summary>Every layer with the module path it adapts (<c>down_blocks.0...attn1.to_q</c>).</summary>
    public IEnumerable<(string ModulePath, LoraLinearLayer Layer)> Layers() =>
        _processors.SelectMany(p => p.Layers.Layers().Select(l => (ModulePathOf(p.ProcessorName, l.Projection), l.Layer)));

    /// <summary>
    /// Creates the adapter as the seed does: for every attention processor name, hidden size from the block
    /// (<c>mid_block</c>: last of block_out_channels; <c>up_blocks.i</c>: reversed(block_out_channels)[i];
    /// <c>down_blocks.i</c>: block_out_channels[i]) and cross-attention dim none for <c>attn1</c>, else the UNet's
    /// <c>cross_attention_dim</c>; down ~ N(0, 1/rank), up = 0, drawn from <paramref name="generator"/> in processor order.
    /// </summary>
    public static LoraNetwork Create(UNet2DConditionModel unet, LoraNetworkOptions options, Generator generator, TensorSpec? spec = null)
    {
        if (options.Rank < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.Rank, "the LoRA rank must be at least 1");
        spec ??= new TensorSpec(unet.Spec.Device, ScalarType.Float32);
        var config = unet.Config;
        var processors = new List<(string, LoraAttnLayers)>();
        foreach (var (name, attention) in unet.AttentionModules())
        {
            bool selfAttention = name.EndsWith("attn1.processor", StringComparison.Ordinal);
            if ((options.AttentionKinds == LoraAttentionKinds.SelfAttentionOnly && !selfAttention)
                || (options.AttentionKinds == LoraAttentionKinds.CrossAttentionOnly && selfAttention))
                continue;

            long hiddenSize = HiddenSizeFor(name, config);
            long contextDim = selfAttention ? hiddenSize : config.CrossAttentionDim;
            if (attention.Shape.QueryDim != hiddenSize || attention.Shape.ContextDim != contextDim)
                throw new InvalidOperationException($"{name}: the seed's hidden-size rule gives {hiddenSize}/{contextDim} but the module is {attention.Shape.QueryDim}/{attention.Shape.ContextDim}");

            LoraLinearLayer? Layer(LoraTargets target, long inFeatures, long outFeatures)
            {
                if (!options.Targets.HasFlag(target))
                    return null;
                var layer = new LoraLinearLayer(inFeatures, outFeatures, options.Rank, options.EffectiveAlpha, options.Dropout, spec);
                layer.InitializeAsSeed(generator);
                return layer;
            }

            long inner = attention.Shape.Heads * attention.Shape.HeadDim;
            processors.Add((name, new LoraAttnLayers(
                Layer(LoraTargets.Query, hiddenSize, inner),
                Layer(LoraTargets.Key, contextDim, inner),
                Layer(LoraTargets.Value, contextDim, inner),
                Layer(LoraTargets.Output, inner, hiddenSize))));
        }

        return new LoraNetwork(processors);
    }

    /// <summary>
    /// Builds an adapter from layers read from a file, checked against this UNet: every layer must adapt an attention
    /// projection the UNet has, with matching input and output sizes. Errors name the file and key.
    /// </summary>
    public static LoraNetwork FromWeights(UNet2DConditionModel unet, string sourcePath, IReadOnlyList<LoraModuleWeights> modules, TensorSpec? spec = null)
    {
        spec ??= new TensorSpec(unet.Spec.Device, ScalarType.Float32);
        var attentions = unet.AttentionModules();
        var projections = ProjectionsOf(unet);

        var byModule = new Dictionary<string, LoraModuleWeights>(StringComparer.Ordinal);
        foreach (var module in modules)
        {
            if (!projections.TryGetValue(module.ModulePath, out var linear))
                throw new InvalidModelFileException(sourcePath, module.SourceKey, $"the UNet has no attention projection '{module.ModulePath}' (is the LoRA for another architecture?)");
            CheckShapes(sourcePath, module, linear, unet.Config.CrossAttentionDim);
            byModule[module.ModulePath] = module;
        }

        using var noGrad = no_grad();
        var processors = new List<(string, LoraAttnLayers)>();
        foreach (var (name, _) in attentions)
        {
            LoraLinearLayer? Layer(string projection)
            {
                if (!byModule.TryGetValue(ModulePathOf(name, projection), out var module))
                    return null;
                var layer = new LoraLinearLayer(module.Down.shape[1], module.Up.shape[0], module.Rank, module.Alpha, 0.0, spec);
                layer.Down.Weight.copy_(module.Down);
                layer.Up.Weight.copy_(module.Up);
                return layer;
            }

            var layers = new LoraAttnLayers(Layer("to_q"), Layer("to_k"), Layer("to_v"), Layer("to_out.0"));
            if (layers.Layers().Any())
                processors.Add((name, layers));
            else
                layers.Dispose();
        }

        return new LoraNetwork(processors);
    }

    private static void CheckShapes(string sourcePath, LoraModuleWeights module, Layers.Linear linear, long crossAttentionDim)
    {
        long inputs = module.Down.shape[1], outputs = module.Up.shape[0];
        if (inputs != linear.InFeatures)
        {
            bool textWidth = module.ModulePath.Contains(".attn2.to_k", StringComparison.Ordinal) || module.ModulePath.Contains(".attn2.to_v", StringComparison.Ordinal);
            string hint = textWidth
                ? $" This LoRA expects {inputs}-dim text embeddings but the model's cross-attention takes {crossAttentionDim}" +
                  (inputs == 1024 && crossAttentionDim == 768 ? ": it was made for SD 2.x and this model is SD 1.x." : (inputs == 768 && crossAttentionDim == 1024 ? ": it was made for SD 1.x and this model is SD 2.x." : "."))
                : "";
            throw new InvalidModelFileException(sourcePath, module.SourceKey,
                $"the down weight {IO.TensorInfo.FormatShape(module.Down.shape)} takes {inputs} inputs but {module.ModulePath} takes {linear.InFeatures}.{hint}");
        }

        if (outputs != linear.OutFeatures)
            throw new InvalidModelFileException(sourcePath, module.SourceKey,
                $"the up weight {IO.TensorInfo.FormatShape(module.Up.shape)} gives {outputs} outputs but {module.ModulePath} gives {linear.OutFeatures}");
    }

    /// <summary>The adapter's layers in format-neutral form (for writing files); tensors are detached views.</summary>
    public List<LoraModuleWeights> ToModuleWeights() =>
        Layers().Select(l => new LoraModuleWeights(l.ModulePath, l.Layer.Down.Weight.detach(), l.Layer.Up.Weight.detach(), l.Layer.Alpha, l.ModulePath)).ToList();

    /// <summary>The seed's hidden-size rule for a processor name.</summary>
    public static long HiddenSizeFor(string processorName, UNet2DConditionConfig config)
    {
        if (processorName.StartsWith("mid_block", StringComparison.Ordinal))
            return config.BlockOutChannels[^1];
        if (processorName.StartsWith("up_blocks.", StringComparison.Ordinal))
            return Enumerable.Reverse(config.BlockOutChannels).ElementAt(BlockIndex(processorName, "up_blocks."));
        if (processorName.StartsWith("down_blocks.", StringComparison.Ordinal))
            return config.BlockOutChannels[BlockIndex(processorName, "down_blocks.")];
        throw new ArgumentException($"'{processorName}' is not a UNet attention processor name", nameof(processorName));
    }

    /// <summary>Every trainable parameter, named as in the seed's state dict.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedParameters() =>
        _processors.SelectMany(p => p.Layers.named_parameters().Select(n => ($"{p.ProcessorName}.{n.name}", n.parameter)));

    public IEnumerable<Parameter> Parameters() => NamedParameters().Select(n => n.Parameter);

    /// <summary>The seed's <c>lora_weights.pt</c> state dict, in order.</summary>
    public List<KeyValuePair<string, Tensor>> StateDict() =>
        _processors.SelectMany(p => StateDicts.Ordered(p.Layers).Select(e => new KeyValuePair<string, Tensor>($"{p.ProcessorName}.{e.Key}", e.Value))).ToList();

    /// <summary>Adds this adapter to the UNet's attention processors with weight <paramref name="weight"/>.</summary>
    public void Attach(UNet2DConditionModel unet, double weight = 1.0)
    {
        var attentions = unet.AttentionModules().ToDictionary(a => a.ProcessorName, a => a.Attention, StringComparer.Ordinal);
        foreach (var (name, layers) in _processors)
        {
            if (!attentions.TryGetValue(name, out var attention))
                throw new InvalidOperationException($"the UNet has no attention processor '{name}'");
            if (attention.Processor is not LoraAttnProcessor processor)
            {
                processor = new LoraAttnProcessor();
                attention.Processor = processor;
            }

            processor.Add(layers, weight);
        }
    }

    /// <summary>Removes this adapter from the UNet (processors left without adapters return to plain attention).</summary>
    public void Detach(UNet2DConditionModel unet)
    {
        var mine = _processors.Select(p => p.Layers).ToHashSet(ReferenceEqualityComparer.Instance);
        foreach (var (_, attention) in unet.AttentionModules())
        {
            if (attention.Processor is not LoraAttnProcessor processor)
                continue;
            foreach (var layers in processor.Adapters.Select(a => a.Layers).Where(mine.Contains).ToList())
                processor.Remove(layers);
            if (processor.Adapters.Count == 0)
                attention.Processor = SdpaAttnProcessor.Instance;
        }
    }

    /// <summary>The weight this adapter is fused into a UNet with, or null when it is not fused.</summary>
    public double? FusedWeight { get; private set; }

    /// <summary>
    /// Adds weight * (alpha/rank) * up @ down into each adapted projection's weight, so the UNet computes the adapted
    /// output with no extra work per call. Refuses (and changes nothing) when any delta is not finite.
    /// </summary>
    public void Fuse(UNet2DConditionModel unet, double weight = 1.0)
    {
        if (FusedWeight is not null)
            throw new InvalidOperationException("this LoRA is already fused");
        var targets = ProjectionsOf(unet);
        using var noGrad = no_grad();
        foreach (var (modulePath, layer) in Layers())
        {
            using var scope = NewDisposeScope();
            var delta = layer.DeltaWeight(weight);
            if (!delta.isfinite().all().item<bool>())
                throw new InvalidOperationException($"fusing {modulePath} would write non-finite values into the model; nothing was fused");
        }

        foreach (var (modulePath, layer) in Layers())
        {
            using var scope = NewDisposeScope();
            var target = targets[modulePath].Weight;
            target.PlusInPlace(layer.DeltaWeight(weight).to(target.dtype));
        }

        FusedWeight = weight;
    }

    /// <summary>Subtracts what <see cref="Fuse"/> added (the base weights come back within float rounding).</summary>
    public void Unfuse(UNet2DConditionModel unet)
    {
        if (FusedWeight is not { } weight)
            throw new InvalidOperationException("this LoRA is not fused");
        var targets = ProjectionsOf(unet);
        using var noGrad = no_grad();
        foreach (var (modulePath, layer) in Layers())
        {
            using var scope = NewDisposeScope();
            var target = targets[modulePath].Weight;
            target.sub_(layer.DeltaWeight(weight).to(target.dtype));
        }

        FusedWeight = null;
    }

    private static Dictionary<string, Layers.Linear> ProjectionsOf(UNet2DConditionModel unet)
    {
        var projections = new Dictionary<string, Layers.Linear>(StringComparer.Ordinal);
        foreach (var (name, attention) in unet.AttentionModules())
        {
            projections[ModulePathOf(name, "to_q")] = attention.ToQ;
            projections[ModulePathOf(name, "to_k")] = attention.ToK;
            projections[ModulePathOf(name, "to_v")] = attention.ToV;
            projections[ModulePathOf(name, "to_out.0")] = attention.ToOut;
        }

        return projections;
    }

    /// <summary>Puts every layer in training or evaluation mode (dropout).</summary>
    public void Train(bool training)
    {
        foreach (var (_, layers) in _processors)
            layers.train(training);
    }

    public void Dispose()
    {
        foreach (var (_, layers) in _processors)
            layers.Dispose();
    }

    public static string ModulePathOf(string processorName, string projection) =>
        processorName[..^".processor".Length] + "." + projection;

    private static int BlockIndex(string name, string prefix)
    {
        int end = name.IndexOf('.', prefix.Length);
        return int.Parse(name.AsSpan(prefix.Length, end - prefix.Length), System.Globalization.CultureInfo.InvariantCulture);
    }
}
