using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>
/// diffusers' <c>ResnetBlock2D</c> with the default time-embedding handling: GroupNorm, activation, 3x3 conv, plus a
/// projected time embedding (UNet only), GroupNorm, activation, dropout, 3x3 conv, and a 1x1 <c>conv_shortcut</c>
/// when the channel count changes.
/// </summary>
internal sealed class ResnetBlock2D : nn.Module
{
    private readonly GroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly Linear? time_emb_proj;
    private readonly GroupNorm norm2;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;
    private readonly Func<Tensor, Tensor> _activation;
    private readonly double _dropout;
    private readonly double _outputScaleFactor;

    public ResnetBlock2D(ResnetSettings settings, long inChannels, long outChannels, long? timeEmbeddingChannels, TensorSpec spec)
        : base(nameof(ResnetBlock2D))
    {
        norm1 = new GroupNorm(settings.Groups, inChannels, settings.Eps, spec);
        conv1 = new Conv2d(inChannels, outChannels, 3, spec, padding: 1);
        time_emb_proj = timeEmbeddingChannels is { } temb ? new Linear(temb, outChannels, hasBias: true, spec) : null;
        norm2 = new GroupNorm(settings.Groups, outChannels, settings.Eps, spec);
        conv2 = new Conv2d(outChannels, outChannels, 3, spec, padding: 1);
        conv_shortcut = inChannels != outChannels ? new Conv2d(inChannels, outChannels, 1, spec) : null;
        _activation = Activations.Get(settings.Activation);
        _dropout = settings.Dropout;
        _outputScaleFactor = settings.OutputScaleFactor;
        RegisterComponents();
    }

    public Tensor Forward(Tensor input, Tensor? timeEmbedding)
    {
        // Temporaries are released on return (autograd keeps what it saved), so a VAE pass at 512 px does not hold
        // every intermediate map until its caller's scope ends.
        using var scope = NewDisposeScope();
        var hidden = conv1.forward(_activation(norm1.forward(input)));
        if (time_emb_proj is not null && timeEmbedding is not null)
            hidden = hidden.Plus(time_emb_proj.forward(_activation(timeEmbedding)).unsqueeze(-1).unsqueeze(-1));

        hidden = _activation(norm2.forward(hidden));
        if (_dropout > 0 && training)
            hidden = nn.functional.dropout(hidden, _dropout, training);
        hidden = conv2.forward(hidden);

        var shortcut = conv_shortcut is null ? input : conv_shortcut.forward(input);
        var output = shortcut.Plus(hidden);
        return (_outputScaleFactor == 1.0 ? output : output.DividedBy(_outputScaleFactor)).MoveToOuterDisposeScope();
    }
}

/// <summary>The settings a block passes to each of its resnets.</summary>
internal sealed record ResnetSettings(long Groups, double Eps, string Activation, double Dropout = 0.0, double OutputScaleFactor = 1.0);

/// <summary>diffusers' <c>Downsample2D</c> with a convolution (<c>conv</c>): stride 2, or right/bottom padding then stride 2 when padding is 0 (VAE).</summary>
internal sealed class Downsample2D : nn.Module
{
    private readonly Conv2d conv;
    private readonly bool _padRightBottom;

    public Downsample2D(long channels, long padding, TensorSpec spec) : base(nameof(Downsample2D))
    {
        conv = new Conv2d(channels, channels, 3, spec, stride: 2, padding: padding);
        _padRightBottom = padding == 0;
        RegisterComponents();
    }

    public Tensor Forward(Tensor input) =>
        conv.forward(_padRightBottom ? nn.functional.pad(input, (0, 1, 0, 1)) : input);
}

/// <summary>diffusers' <c>Upsample2D</c>: nearest-neighbour x2 (or to an explicit size), then a 3x3 conv (<c>conv</c>).</summary>
internal sealed class Upsample2D : nn.Module
{
    private readonly Conv2d conv;

    public Upsample2D(long channels, TensorSpec spec) : base(nameof(Upsample2D))
    {
        conv = new Conv2d(channels, channels, 3, spec, padding: 1);
        RegisterComponents();
    }

    public Tensor Forward(Tensor input, long[]? outputSize = null)
    {
        var dtype = input.dtype;
        var source = dtype == ScalarType.BFloat16 ? input.to(float32) : input;
        var upsampled = outputSize is null
            ? nn.functional.interpolate(source, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest)
            : nn.functional.interpolate(source, size: outputSize, mode: InterpolationMode.Nearest);
        return conv.forward(upsampled.to(dtype));
    }
}
