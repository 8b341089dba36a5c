using StableLora.AttentionProcessors;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Unet;

/// <summary>A block of the UNet's contracting path; pushes each output it produces onto the skip list.</summary>
internal abstract class UnetDownBlock : nn.Module
{
    protected UnetDownBlock(string name) : base(name)
    {
    }

    public abstract Tensor Forward(Tensor hiddenStates, Tensor timeEmbedding, Tensor encoderHiddenStates, AttentionOptions options, List<Tensor> skips);
}

/// <summary>A block of the UNet's expanding path; consumes as many skips as it has resnets.</summary>
internal abstract class UnetUpBlock : nn.Module
{
    protected UnetUpBlock(string name) : base(name)
    {
    }

    public abstract int ResnetCount { get; }

    public abstract Tensor Forward(Tensor hiddenStates, IReadOnlyList<Tensor> skips, Tensor timeEmbedding, Tensor encoderHiddenStates,
        AttentionOptions options, long[]? upsampleSize);
}

/// <summary>diffusers' <c>DownBlock2D</c> (resnets, no attention) and <c>CrossAttnDownBlock2D</c> (a transformer after each resnet).</summary>
internal sealed class DownBlock2D : UnetDownBlock
{
    // Field order is state-dict order: diffusers registers attentions before resnets.
    private readonly TorchSharp.Modules.ModuleList<Transformer2DModel>? attentions;
    private readonly TorchSharp.Modules.ModuleList<ResnetBlock2D> resnets;
    private readonly TorchSharp.Modules.ModuleList<Downsample2D>? downsamplers;

    public DownBlock2D(UnetBlockSettings block, long inChannels, long outChannels, bool addDownsample, TensorSpec spec)
        : base(block.WithAttention ? "CrossAttnDownBlock2D" : "DownBlock2D")
    {
        resnets = new TorchSharp.Modules.ModuleList<ResnetBlock2D>(Enumerable.Range(0, block.Layers)
            .Select(i => new ResnetBlock2D(block.Resnet, i == 0 ? inChannels : outChannels, outChannels, block.TimeEmbedDim, spec)).ToArray());
        if (block.WithAttention)
            attentions = new TorchSharp.Modules.ModuleList<Transformer2DModel>(Enumerable.Range(0, block.Layers)
                .Select(_ => new Transformer2DModel(block.Transformer, outChannels, block.Heads, block.TransformerLayers, spec)).ToArray());
        if (addDownsample)
            downsamplers = new TorchSharp.Modules.ModuleList<Downsample2D>(new Downsample2D(outChannels, block.DownsamplePadding, spec));
        RegisterComponents();
    }

    public override Tensor Forward(Tensor hiddenStates, Tensor timeEmbedding, Tensor encoderHiddenStates, AttentionOptions options, List<Tensor> skips)
    {
        var hidden = hiddenStates;
        for (int i = 0; i < resnets.Count; i++)
        {
            hidden = Checkpointed.Resnet(resnets[i], hidden, timeEmbedding, options);
            if (attentions is not null)
                hidden = Checkpointed.Transformer(attentions[i], hidden, encoderHiddenStates, options);
            skips.Add(hidden);
        }

        if (downsamplers is not null)
        {
            hidden = downsamplers[0].Forward(hidden);
            skips.Add(hidden);
        }

        return hidden;
    }
}

/// <summary>diffusers' <c>UpBlock2D</c> and <c>CrossAttnUpBlock2D</c>: each resnet takes the hidden state concatenated with a skip.</summary>
internal sealed class UpBlock2D : UnetUpBlock
{
    // Field order is state-dict order: diffusers registers attentions before resnets.
    private readonly TorchSharp.Modules.ModuleList<Transformer2DModel>? attentions;
    private readonly TorchSharp.Modules.ModuleList<ResnetBlock2D> resnets;
    private readonly TorchSharp.Modules.ModuleList<Upsample2D>? upsamplers;

    public UpBlock2D(UnetBlockSettings block, long inChannels, long outChannels, long previousOutputChannels, bool addUpsample, TensorSpec spec)
        : base(block.WithAttention ? "CrossAttnUpBlock2D" : "UpBlock2D")
    {
        resnets = new TorchSharp.Modules.ModuleList<ResnetBlock2D>(Enumerable.Range(0, block.Layers).Select(i =>
        {
            long skipChannels = i == block.Layers - 1 ? inChannels : outChannels;
            long resnetIn = i == 0 ? previousOutputChannels : outChannels;
            return new ResnetBlock2D(block.Resnet, resnetIn + skipChannels, outChannels, block.TimeEmbedDim, spec);
        }).ToArray());
        if (block.WithAttention)
            attentions = new TorchSharp.Modules.ModuleList<Transformer2DModel>(Enumerable.Range(0, block.Layers)
                .Select(_ => new Transformer2DModel(block.Transformer, outChannels, block.Heads, block.TransformerLayers, spec)).ToArray());
        if (addUpsample)
            upsamplers = new TorchSharp.Modules.ModuleList<Upsample2D>(new Upsample2D(outChannels, spec));
        RegisterComponents();
    }

    public override int ResnetCount => resnets.Count;

    public override Tensor Forward(Tensor hiddenStates, IReadOnlyList<Tensor> skips, Tensor timeEmbedding, Tensor encoderHiddenStates,
        AttentionOptions options, long[]? upsampleSize)
    {
        var hidden = hiddenStates;
        for (int i = 0; i < resnets.Count; i++)
        {
            hidden = cat(new[] { hidden, skips[skips.Count - 1 - i] }, 1);
            hidden = Checkpointed.Resnet(resnets[i], hidden, timeEmbedding, options);
            if (attentions is not null)
                hidden = Checkpointed.Transformer(attentions[i], hidden, encoderHiddenStates, options);
        }

        return upsamplers is null ? hidden : upsamplers[0].Forward(hidden, upsampleSize);
    }
}

/// <summary>diffusers' <c>UNetMidBlock2DCrossAttn</c>: resnet, then (transformer, resnet) pairs.</summary>
internal sealed class UNetMidBlock2DCrossAttn : nn.Module
{
    private readonly TorchSharp.Modules.ModuleList<Transformer2DModel> attentions;
    private readonly TorchSharp.Modules.ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2DCrossAttn(UnetBlockSettings block, long channels, TensorSpec spec) : base(nameof(UNetMidBlock2DCrossAttn))
    {
        attentions = new TorchSharp.Modules.ModuleList<Transformer2DModel>(
            new Transformer2DModel(block.Transformer, channels, block.Heads, block.TransformerLayers, spec));
        resnets = new TorchSharp.Modules.ModuleList<ResnetBlock2D>(Enumerable.Range(0, 2)
            .Select(_ => new ResnetBlock2D(block.Resnet, channels, channels, block.TimeEmbedDim, spec)).ToArray());
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates, Tensor timeEmbedding, Tensor encoderHiddenStates, AttentionOptions options)
    {
        var hidden = Checkpointed.Resnet(resnets[0], hiddenStates, timeEmbedding, options);
        for (int i = 0; i < attentions.Count; i++)
        {
            hidden = Checkpointed.Transformer(attentions[i], hidden, encoderHiddenStates, options);
            hidden = Checkpointed.Resnet(resnets[i + 1], hidden, timeEmbedding, options);
        }

        return hidden;
    }
}

/// <summary>What one UNet block is built from.</summary>
internal sealed record UnetBlockSettings(
    bool WithAttention,
    int Layers,
    int TransformerLayers,
    long Heads,
    long TimeEmbedDim,
    ResnetSettings Resnet,
    TransformerSettings Transformer,
    long DownsamplePadding);

/// <summary>The UNet's resnets and transformers, checkpointed when <see cref="AttentionOptions.GradientCheckpointing"/> asks (as diffusers does per block).</summary>
internal static class Checkpointed
{
    // The blocks release their own temporaries (each runs in a dispose scope); under checkpointing autograd saves
    // only a block's inputs.
    public static Tensor Resnet(ResnetBlock2D resnet, Tensor hidden, Tensor timeEmbedding, AttentionOptions options) =>
        options.GradientCheckpointing
            ? GradientCheckpoint.Run(inputs => resnet.Forward(inputs[0], inputs[1]), new[] { hidden, timeEmbedding }, resnet)
            : resnet.Forward(hidden, timeEmbedding);

    public static Tensor Transformer(Transformer2DModel transformer, Tensor hidden, Tensor encoderHiddenStates, AttentionOptions options) =>
        options.GradientCheckpointing
            ? GradientCheckpoint.Run(inputs => transformer.Forward(inputs[0], inputs[1], options), new[] { hidden, encoderHiddenStates }, transformer)
            : transformer.Forward(hidden, encoderHiddenStates, options);
}
