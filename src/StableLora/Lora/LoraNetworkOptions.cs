using System.Text.RegularExpressions;

namespace StableLora.Lora;

/// <summary>The shape of a new LoRA network: which modules, at which rank and alpha, with which dropouts.</summary>
internal sealed record LoraNetworkOptions
{
    public LoraPreset Preset { get; init; } = LoraPreset.Attention;

    /// <summary>Module-path globs over the UNet (<c>*</c> any run of characters, dots included; <c>?</c> one); when given they replace the preset's UNet modules.</summary>
    public IReadOnlyList<string> TargetPatterns { get; init; } = Array.Empty<string>();

    /// <summary>The network rank (Linear and 1x1 convolution modules).</summary>
    public int Rank { get; init; } = 4;

    /// <summary>The network alpha; null: the rank (scale 1).</summary>
    public double? Alpha { get; init; }

    /// <summary>With the attention preset: which projections.</summary>
    public LoraTargets Targets { get; init; } = LoraTargets.All;

    /// <summary>With the attention preset: which attentions.</summary>
    public LoraAttentionKinds AttentionKinds { get; init; } = LoraAttentionKinds.All;

    /// <summary>LoCon: the rank of the ResnetBlock2D / Downsample2D / Upsample2D convolutions (kohya's <c>conv_dim</c>); null: none.</summary>
    public int? ConvRank { get; init; }

    /// <summary>kohya's <c>conv_alpha</c>; null: the conv rank.</summary>
    public double? ConvAlpha { get; init; }

    /// <summary>Whether the text encoder's attention and MLP layers get LoRA too.</summary>
    public bool TextEncoder { get; init; }

    /// <summary>The text encoder's rank; null: the network rank.</summary>
    public int? TextEncoderRank { get; init; }

    /// <summary>The text encoder's alpha; null: the network alpha when the rank is the network's too, else its rank.</summary>
    public double? TextEncoderAlpha { get; init; }

    public double InputDropout { get; init; }

    public double NetworkDropout { get; init; }

    public double RankDropout { get; init; }

    public double ModuleDropout { get; init; }

    public double EffectiveAlpha => Alpha ?? Rank;

    public LoraAdapterSettings Settings(int rank, double? alpha) =>
        new(rank, alpha ?? rank, InputDropout, NetworkDropout, RankDropout, ModuleDropout);
}

/// <summary>A module chosen for a new LoRA, with its settings and how its weights start.</summary>
internal sealed record LoraTarget(AdaptableModule Module, LoraAdapterSettings Settings, LoraInitialization Initialization);

/// <summary>kohya's and the attention preset's target rules over <see cref="AdaptableModels"/>.</summary>
internal static class LoraTargetRules
{
    public static readonly string[] AttentionProjections = { "to_q", "to_k", "to_v", "to_out.0" };

    /// <summary>Every module the options select: the UNet's first (in diffusers' attn_processors order for the attention preset), then the text encoder's.</summary>
    public static IReadOnlyList<LoraTarget> Select(AdaptableModels models, LoraNetworkOptions options)
    {
        var targets = new List<LoraTarget>();
        var network = options.Settings(options.Rank, options.Alpha);
        if (options.TargetPatterns.Count > 0)
        {
            var patterns = options.TargetPatterns.Select(Glob).ToList();
            foreach (var module in models.Modules.Where(m => ModuleKeys.IsUnet(m.Key) && patterns.Any(p => p.IsMatch(ModuleKeys.PathOf(m.Key)))))
            {
                var settings = module.IsSpatialConvolution && options.ConvRank is { } convRank ? options.Settings(convRank, options.ConvAlpha) : network;
                targets.Add(new LoraTarget(module, settings, LoraInitialization.Kohya));
            }
        }
        else if (options.Preset == LoraPreset.Attention)
        {
            foreach (var (processorName, attention) in models.Unet.AttentionModules())
            {
                bool selfAttention = processorName.EndsWith("attn1.processor", StringComparison.Ordinal);
                if ((options.AttentionKinds == LoraAttentionKinds.SelfAttentionOnly && !selfAttention)
                    || (options.AttentionKinds == LoraAttentionKinds.CrossAttentionOnly && selfAttention))
                    continue;
                string path = processorName[..^".processor".Length];
                foreach (var (projection, flag) in AttentionProjections.Zip(new[] { LoraTargets.Query, LoraTargets.Key, LoraTargets.Value, LoraTargets.Output }))
                {
                    if (options.Targets.HasFlag(flag))
                        targets.Add(new LoraTarget(models.Find(ModuleKeys.ForUnet($"{path}.{projection}"))!, network, LoraInitialization.Seed));
                }
            }
        }
        else
        {
            foreach (var module in models.Modules.Where(m => ModuleKeys.IsUnet(m.Key) && AdaptableModels.IsTransformerBlock(m.Block)))
                targets.Add(new LoraTarget(module, network, LoraInitialization.Kohya));
        }

        if (options.ConvRank is { } rank && options.TargetPatterns.Count == 0)
        {
            // LoCon, as kohya: 3x3 convolutions at the conv rank, the blocks' Linear and 1x1 convolutions at the network rank.
            var conv = options.Settings(rank, options.ConvAlpha);
            foreach (var module in models.Modules.Where(m => ModuleKeys.IsUnet(m.Key) && AdaptableModels.IsConvolutionBlock(m.Block)))
                targets.Add(new LoraTarget(module, module.IsSpatialConvolution ? conv : network, LoraInitialization.Kohya));
        }

        if (options.TextEncoder)
        {
            if (models.TextEncoder is null)
                throw new InvalidOperationException("text-encoder LoRA needs the text encoder");
            // As kohya: the text encoder takes the network's rank and alpha unless given its own.
            var textEncoder = options.Settings(options.TextEncoderRank ?? options.Rank, options.TextEncoderAlpha ?? (options.TextEncoderRank is null ? options.Alpha : null));
            foreach (var module in models.Modules.Where(m => ModuleKeys.IsTextEncoder(m.Key) && AdaptableModels.IsTextEncoderBlock(m.Block)))
                targets.Add(new LoraTarget(module, textEncoder, LoraInitialization.Kohya));
        }

        return targets;
    }

    /// <summary>A module-path glob: <c>*</c> matches any run of characters (dots too), <c>?</c> one character.</summary>
    public static Regex Glob(string pattern) =>
        new("^" + Regex.Escape(pattern).Replace(@"\*", ".*", StringComparison.Ordinal).Replace(@"\?", ".", StringComparison.Ordinal) + "$", RegexOptions.CultureInvariant);
}
