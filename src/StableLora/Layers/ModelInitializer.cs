using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>A layer that can fill its parameters with PyTorch's default initialisation.</summary>
internal interface IInitializable
{
    void Initialize(Generator generator);
}

/// <summary>
/// Deterministic random initialisation of a whole model (for mock models in tests and the embedded demo): every
/// layer gets PyTorch's default init, drawn on the CPU from one seeded generator in module order, so the same seed
/// gives the same weights on any device.
/// </summary>
internal static class ModelInitializer
{
    public static T InitializeRandom<T>(T model, ulong seed) where T : nn.Module
    {
        using var generator = new Generator(seed, CPU);
        using var noGrad = no_grad();
        foreach (var (_, module) in model.named_modules())
        {
            if (module is IInitializable layer)
                layer.Initialize(generator);
        }

        return model;
    }
}

internal static class PyTorchInit
{
    /// <summary>kaiming_uniform_(a=sqrt(5)) on the weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) on the bias, as nn.Linear and nn.Conv2d do.</summary>
    public static void KaimingUniformWithBias(Tensor weight, Tensor? bias, long fanIn, Generator generator)
    {
        using var noGrad = no_grad();
        double bound = fanIn > 0 ? 1.0 / Math.Sqrt(fanIn) : 0;
        CopyUniform(weight, bound, generator);
        if (bias is not null)
            CopyUniform(bias, bound, generator);
    }

    public static void OnesAndZeros(Tensor weight, Tensor bias)
    {
        using var noGrad = no_grad();
        weight.FillInPlace(1);
        bias.FillInPlace(0);
    }

    private static void CopyUniform(Tensor target, double bound, Generator generator)
    {
        using var values = empty(target.shape, float32, CPU).uniform_(-bound, bound, generator);
        target.copy_(values);
    }
}
