using StableLora.AttentionProcessors;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Unet;

/// <summary>
/// diffusers' <c>UNet2DConditionModel</c> for SD 1.x/2.x, built from <see cref="UNet2DConditionConfig"/>. Field names
/// are the state-dict names, and fields are declared in diffusers' registration order so that the state dict (and
/// the attention processors) come out in the same order.
/// </summary>
internal sealed class UNet2DConditionModel : nn.Module
{
    private readonly Conv2d conv_in;
    private readonly TimestepEmbedding time_embedding;
    private readonly TorchSharp.Modules.ModuleList<UnetDownBlock> down_blocks;
    private readonly TorchSharp.Modules.ModuleList<UnetUpBlock> up_blocks;
    private readonly UNetMidBlock2DCrossAttn mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;
    private readonly Func<Tensor, Tensor> _activation;

    public UNet2DConditionModel(UNet2DConditionConfig config, TensorSpec spec) : base(nameof(UNet2DConditionModel))
    {
        Config = config;
        Spec = spec;
        var channels = config.BlockOutChannels;
        int blocks = channels.Length;
        conv_in = new Conv2d(config.InChannels, channels[0], config.ConvInKernel, spec, padding: (config.ConvInKernel - 1) / 2);
        time_embedding = new TimestepEmbedding(channels[0], config.TimeEmbedDim, config.ActFn, config.TimestepPostAct, spec);

        var resnet = new ResnetSettings(config.NormNumGroups, config.NormEps, config.ActFn, config.Dropout, config.ResnetOutScaleFactor);
        var transformer = new TransformerSettings(config.NormNumGroups, config.CrossAttentionDim, config.UseLinearProjection, config.UpcastAttention, config.Dropout);
        UnetBlockSettings Block(string type, int layers, int transformerLayers, int heads, ResnetSettings resnetSettings) =>
            new(type.StartsWith("CrossAttn", StringComparison.Ordinal), layers, transformerLayers, heads, config.TimeEmbedDim,
                resnetSettings, transformer, config.DownsamplePadding);

        down_blocks = new TorchSharp.Modules.ModuleList<UnetDownBlock>();
        for (int i = 0; i < blocks; i++)
        {
            long input = i == 0 ? channels[0] : channels[i - 1];
            var settings = Block(config.DownBlockTypes[i], config.LayersPerBlock[i], config.TransformerLayersPerBlock[i], config.AttentionHeads[i], resnet);
            down_blocks.Add(new DownBlock2D(settings, input, channels[i], addDownsample: i < blocks - 1, spec));
        }

        up_blocks = new TorchSharp.Modules.ModuleList<UnetUpBlock>();
        var reversedChannels = Enumerable.Reverse(channels).ToArray();
        var reversedHeads = Enumerable.Reverse(config.AttentionHeads).ToArray();
        var reversedLayers = Enumerable.Reverse(config.LayersPerBlock).ToArray();
        var reversedTransformerLayers = Enumerable.Reverse(config.TransformerLayersPerBlock).ToArray();
        for (int i = 0; i < blocks; i++)
        {
            long previousOutput = i == 0 ? reversedChannels[0] : reversedChannels[i - 1];
            long input = reversedChannels[Math.Min(i + 1, blocks - 1)];
            var settings = Block(config.UpBlockTypes[i], reversedLayers[i] + 1, reversedTransformerLayers[i], reversedHeads[i], resnet);
            up_blocks.Add(new UpBlock2D(settings, input, reversedChannels[i], previousOutput, addUpsample: i < blocks - 1, spec));
        }

        var midResnet = resnet with { OutputScaleFactor = config.MidBlockScaleFactor };
        mid_block = new UNetMidBlock2DCrossAttn(
            Block("CrossAttn", 1, config.TransformerLayersPerBlock[^1], config.AttentionHeads[^1], midResnet), channels[^1], spec);
        conv_norm_out = new GroupNorm(config.NormNumGroups, channels[0], config.NormEps, spec);
        conv_out = new Conv2d(channels[0], config.OutChannels, config.ConvOutKernel, spec, padding: (config.ConvOutKernel - 1) / 2);
        _activation = Activations.Get(config.ActFn);
        RegisterComponents();
    }

    public UNet2DConditionConfig Config { get; }

    public TensorSpec Spec { get; }

    /// <summary>
    /// Whether training forwards (module in train mode, gradients on) recompute each resnet's and transformer's
    /// activations during backward instead of keeping them: less memory for about one more forward of time.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>Predicts the noise (or v, or x0, per the scheduler's prediction type) for a batch of latents.</summary>
    /// <param name="sample">Latents [B, C, H, W].</param>
    /// <param name="timestep">A 0-dim timestep (broadcast to the batch) or one per sample, integer or float.</param>
    /// <param name="encoderHiddenStates">Text embeddings [B, tokens, cross_attention_dim].</param>
    /// <param name="options">Per-call attention settings (LoRA scale), or null.</param>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, AttentionOptions? options = null)
    {
        options ??= AttentionOptions.Default;
        if (GradientCheckpointing && training && !options.GradientCheckpointing)
            options = options with { GradientCheckpointing = true };
        int upsamplers = Config.Downsamplings;
        long factor = 1L << upsamplers;
        bool forwardUpsampleSize = sample.shape[^2] % factor != 0 || sample.shape[^1] % factor != 0;

        var hidden = Config.CenterInputSample ? sample.Times(2.0).Minus(1.0) : sample;
        var timesteps = timestep.dim() == 0 ? timestep.reshape(1).expand(hidden.shape[0]) : timestep;
        var features = TimestepFeatures.Compute(timesteps, Config.BlockOutChannels[0], Config.FlipSinToCos, Config.FreqShift).to(hidden.dtype);
        var embedding = time_embedding.Forward(features);

        hidden = conv_in.forward(hidden);
        var skips = new List<Tensor> { hidden };
        foreach (var block in down_blocks)
            hidden = block.Forward(hidden, embedding, encoderHiddenStates, options, skips);

        hidden = mid_block.Forward(hidden, embedding, encoderHiddenStates, options);

        for (int i = 0; i < up_blocks.Count; i++)
        {
            var block = up_blocks[i];
            var blockSkips = skips.GetRange(skips.Count - block.ResnetCount, block.ResnetCount);
            skips.RemoveRange(skips.Count - block.ResnetCount, block.ResnetCount);
            long[]? upsampleSize = forwardUpsampleSize && i < up_blocks.Count - 1 ? skips[^1].shape[2..] : null;
            hidden = block.Forward(hidden, blockSkips, embedding, encoderHiddenStates, options, upsampleSize);
        }

        return conv_out.forward(_activation(conv_norm_out.forward(hidden)));
    }

    /// <summary>Every attention module with its diffusers processor name (<c>down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor</c>), in diffusers' order.</summary>
    public IReadOnlyList<(string ProcessorName, Attention Attention)> AttentionModules() =>
        named_modules().Where(m => m.module is Attention).Select(m => ($"{m.name}.processor", (Attention)m.module)).ToArray();
}
