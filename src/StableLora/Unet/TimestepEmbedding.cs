using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Unet;

/// <summary>
/// The sinusoidal timestep features of diffusers' <c>Timesteps</c> / <c>get_timestep_embedding</c>: frequencies
/// exp(-ln(10000) * i / (half - freq_shift)) computed in float32, then [sin, cos] (or [cos, sin] with flip_sin_to_cos).
/// </summary>
internal static class TimestepFeatures
{
    public static Tensor Compute(Tensor timesteps, long dimension, bool flipSinToCos, double freqShift, double maxPeriod = 10000)
    {
        long half = dimension / 2;
        var exponent = TensorMath.Arange(half, float32, timesteps.device).Times(-Math.Log(maxPeriod));
        exponent = exponent.DividedBy(half - freqShift);
        var arguments = timesteps.to(float32).unsqueeze(1) * exponent.exp().unsqueeze(0);
        var sin = arguments.sin();
        var cos = arguments.cos();
        var embedding = flipSinToCos ? cat(new[] { cos, sin }, -1) : cat(new[] { sin, cos }, -1);
        return dimension % 2 == 1 ? nn.functional.pad(embedding, (0L, 1L)) : embedding;
    }
}

/// <summary>diffusers' <c>TimestepEmbedding</c>: <c>linear_1</c>, activation, <c>linear_2</c> (and an optional post-activation).</summary>
internal sealed class TimestepEmbedding : nn.Module
{
    private readonly Linear linear_1;
    private readonly Linear linear_2;
    private readonly Func<Tensor, Tensor> _activation;
    private readonly Func<Tensor, Tensor>? _postActivation;

    public TimestepEmbedding(long inChannels, long embedDim, string activation, string? postActivation, TensorSpec spec) : base(nameof(TimestepEmbedding))
    {
        linear_1 = new Linear(inChannels, embedDim, hasBias: true, spec);
        linear_2 = new Linear(embedDim, embedDim, hasBias: true, spec);
        _activation = Activations.Get(activation);
        _postActivation = postActivation is null ? null : Activations.Get(postActivation);
        RegisterComponents();
    }

    public Tensor Forward(Tensor features)
    {
        var embedding = linear_2.forward(_activation(linear_1.forward(features)));
        return _postActivation is null ? embedding : _postActivation(embedding);
    }
}
