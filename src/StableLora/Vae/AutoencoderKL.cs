using StableLora.AttentionProcessors;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Vae;

/// <summary>
/// diffusers' <c>AutoencoderKL</c> (the SD VAE): <c>encoder</c> + <c>quant_conv</c> give the mean and log-variance of
/// a diagonal Gaussian over latents; <c>post_quant_conv</c> + <c>decoder</c> map latents back to pixels in [-1, 1].
/// Scaling by <see cref="AutoencoderKLConfig.ScalingFactor"/> is left to the caller, as in diffusers.
/// </summary>
internal sealed class AutoencoderKL : nn.Module
{
    private readonly VaeEncoder encoder;
    private readonly VaeDecoder decoder;
    private readonly Conv2d quant_conv;
    private readonly Conv2d post_quant_conv;

    public AutoencoderKL(AutoencoderKLConfig config, TensorSpec spec) : base(nameof(AutoencoderKL))
    {
        Config = config;
        Spec = spec;
        encoder = new VaeEncoder(config, spec);
        decoder = new VaeDecoder(config, spec);
        quant_conv = new Conv2d(2 * config.LatentChannels, 2 * config.LatentChannels, 1, spec);
        post_quant_conv = new Conv2d(config.LatentChannels, config.LatentChannels, 1, spec);
        RegisterComponents();
    }

    public AutoencoderKLConfig Config { get; }

    public TensorSpec Spec { get; }

    /// <summary>The encoder's raw output (2 x latent channels, before <c>quant_conv</c>).</summary>
    public Tensor EncoderOutput(Tensor images) => encoder.Forward(images);

    /// <summary>Encodes images in [-1, 1] [B, 3, H, W] to the latent distribution.</summary>
    public DiagonalGaussianDistribution Encode(Tensor images)
    {
        Tensor moments;
        using (var scope = NewDisposeScope())
            moments = quant_conv.forward(encoder.Forward(images)).MoveToOuterDisposeScope();
        return new(moments);
    }

    /// <summary>Decodes (unscaled) latents to images in about [-1, 1].</summary>
    public Tensor Decode(Tensor latents)
    {
        using var scope = NewDisposeScope();
        return decoder.Forward(post_quant_conv.forward(latents)).MoveToOuterDisposeScope();
    }
}

/// <summary>diffusers' <c>DiagonalGaussianDistribution</c>: moments split into mean and log-variance (clamped to [-30, 20]).</summary>
internal sealed class DiagonalGaussianDistribution
{
    public DiagonalGaussianDistribution(Tensor moments)
    {
        var halves = moments.chunk(2, 1);
        Moments = moments;
        Mean = halves[0];
        LogVar = halves[1].Clamp(-30.0, 20.0);
        Std = LogVar.Times(0.5).exp();
    }

    public Tensor Moments { get; }

    public Tensor Mean { get; }

    public Tensor LogVar { get; }

    public Tensor Std { get; }

    /// <summary>mean + std * eps with eps drawn as diffusers' <c>randn_tensor</c> does (on the generator's device).</summary>
    public Tensor Sample(Generator? generator)
    {
        var device = generator?.device ?? Mean.device;
        var noise = randn(Mean.shape, Mean.dtype, device, generator: generator).to(Mean.device);
        return Sample(noise);
    }

    /// <summary>mean + std * <paramref name="noise"/>.</summary>
    public Tensor Sample(Tensor noise) => Mean.Plus(Std * noise);
}

/// <summary>The VAE encoder: conv_in, down blocks (resnets + right/bottom-padded downsampler), mid block, norm, activation, conv_out.</summary>
internal sealed class VaeEncoder : nn.Module
{
    private readonly Conv2d conv_in;
    private readonly TorchSharp.Modules.ModuleList<DownEncoderBlock2D> down_blocks;
    private readonly VaeMidBlock mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;
    private readonly Func<Tensor, Tensor> _activation;

    public VaeEncoder(AutoencoderKLConfig config, TensorSpec spec) : base("Encoder")
    {
        var channels = config.BlockOutChannels;
        var resnet = new ResnetSettings(config.NormNumGroups, 1e-6, config.ActFn);
        conv_in = new Conv2d(config.InChannels, channels[0], 3, spec, padding: 1);
        down_blocks = new TorchSharp.Modules.ModuleList<DownEncoderBlock2D>(Enumerable.Range(0, channels.Length).Select(i =>
            new DownEncoderBlock2D(resnet, config.LayersPerBlock, i == 0 ? channels[0] : channels[i - 1], channels[i], addDownsample: i < channels.Length - 1, spec)).ToArray());
        mid_block = new VaeMidBlock(resnet, channels[^1], spec);
        conv_norm_out = new GroupNorm(config.NormNumGroups, channels[^1], 1e-6, spec);
        conv_out = new Conv2d(channels[^1], 2 * config.LatentChannels, 3, spec, padding: 1);
        _activation = Activations.Get(config.ActFn);
        RegisterComponents();
    }

    public Tensor Forward(Tensor images)
    {
        var hidden = conv_in.forward(images);
        foreach (var block in down_blocks)
            hidden = block.Forward(hidden);
        hidden = mid_block.Forward(hidden);
        return conv_out.forward(_activation(conv_norm_out.forward(hidden)));
    }
}

/// <summary>The VAE decoder: conv_in, mid block, up blocks (resnets + nearest upsampler), norm, activation, conv_out.</summary>
internal sealed class VaeDecoder : nn.Module
{
    private readonly Conv2d conv_in;
    private readonly TorchSharp.Modules.ModuleList<UpDecoderBlock2D> up_blocks;
    private readonly VaeMidBlock mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;
    private readonly Func<Tensor, Tensor> _activation;

    public VaeDecoder(AutoencoderKLConfig config, TensorSpec spec) : base("Decoder")
    {
        var channels = config.BlockOutChannels;
        var reversed = Enumerable.Reverse(channels).ToArray();
        var resnet = new ResnetSettings(config.NormNumGroups, 1e-6, config.ActFn);
        conv_in = new Conv2d(config.LatentChannels, channels[^1], 3, spec, padding: 1);
        up_blocks = new TorchSharp.Modules.ModuleList<UpDecoderBlock2D>(Enumerable.Range(0, reversed.Length).Select(i =>
            new UpDecoderBlock2D(resnet, config.LayersPerBlock + 1, i == 0 ? reversed[0] : reversed[i - 1], reversed[i], addUpsample: i < reversed.Length - 1, spec)).ToArray());
        mid_block = new VaeMidBlock(resnet, channels[^1], spec);
        conv_norm_out = new GroupNorm(config.NormNumGroups, channels[0], 1e-6, spec);
        conv_out = new Conv2d(channels[0], config.OutChannels, 3, spec, padding: 1);
        _activation = Activations.Get(config.ActFn);
        RegisterComponents();
    }

    public Tensor Forward(Tensor latents)
    {
        var hidden = mid_block.Forward(conv_in.forward(latents));
        foreach (var block in up_blocks)
            hidden = block.Forward(hidden);
        return conv_out.forward(_activation(conv_norm_out.forward(hidden)));
    }
}

/// <summary>diffusers' <c>DownEncoderBlock2D</c>.</summary>
internal sealed class DownEncoderBlock2D : nn.Module
{
    private readonly TorchSharp.Modules.ModuleList<ResnetBlock2D> resnets;
    private readonly TorchSharp.Modules.ModuleList<Downsample2D>? downsamplers;

    public DownEncoderBlock2D(ResnetSettings resnet, int layers, long inChannels, long outChannels, bool addDownsample, TensorSpec spec) : base(nameof(DownEncoderBlock2D))
    {
        resnets = new TorchSharp.Modules.ModuleList<ResnetBlock2D>(Enumerable.Range(0, layers)
            .Select(i => new ResnetBlock2D(resnet, i == 0 ? inChannels : outChannels, outChannels, null, spec)).ToArray());
        if (addDownsample)
            downsamplers = new TorchSharp.Modules.ModuleList<Downsample2D>(new Downsample2D(outChannels, padding: 0, spec));
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates)
    {
        var hidden = hiddenStates;
        foreach (var resnet in resnets)
            hidden = resnet.Forward(hidden, null);
        return downsamplers is null ? hidden : downsamplers[0].Forward(hidden);
    }
}

/// <summary>diffusers' <c>UpDecoderBlock2D</c>.</summary>
internal sealed class UpDecoderBlock2D : nn.Module
{
    private readonly TorchSharp.Modules.ModuleList<ResnetBlock2D> resnets;
    private readonly TorchSharp.Modules.ModuleList<Upsample2D>? upsamplers;

    public UpDecoderBlock2D(ResnetSettings resnet, int layers, long inChannels, long outChannels, bool addUpsample, TensorSpec spec) : base(nameof(UpDecoderBlock2D))
    {
        resnets = new TorchSharp.Modules.ModuleList<ResnetBlock2D>(Enumerable.Range(0, layers)
            .Select(i => new ResnetBlock2D(resnet, i == 0 ? inChannels : outChannels, outChannels, null, spec)).ToArray());
        if (addUpsample)
            upsamplers = new TorchSharp.Modules.ModuleList<Upsample2D>(new Upsample2D(outChannels, spec));
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates)
    {
        var hidden = hiddenStates;
        foreach (var resnet in resnets)
            hidden = resnet.Forward(hidden, null);
        return upsamplers is null ? hidden : upsamplers[0].Forward(hidden);
    }
}

/// <summary>diffusers' <c>UNetMidBlock2D</c> as the VAE uses it: resnet, single-head self-attention with group norm and residual, resnet.</summary>
internal sealed class VaeMidBlock : nn.Module
{
    private readonly TorchSharp.Modules.ModuleList<Attention> attentions;
    private readonly TorchSharp.Modules.ModuleList<ResnetBlock2D> resnets;

    public VaeMidBlock(ResnetSettings resnet, long channels, TensorSpec spec) : base("UNetMidBlock2D")
    {
        var shape = new AttentionShape(channels, channels, Heads: 1, HeadDim: channels, ProjectionBias: true,
            NormGroups: resnet.Groups, NormEps: resnet.Eps, ResidualConnection: true);
        attentions = new TorchSharp.Modules.ModuleList<Attention>(new Attention(shape, spec));
        resnets = new TorchSharp.Modules.ModuleList<ResnetBlock2D>(
            new ResnetBlock2D(resnet, channels, channels, null, spec), new ResnetBlock2D(resnet, channels, channels, null, spec));
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates)
    {
        var hidden = resnets[0].Forward(hiddenStates, null);
        hidden = attentions[0].Forward(hidden);
        return resnets[1].Forward(hidden, null);
    }
}
