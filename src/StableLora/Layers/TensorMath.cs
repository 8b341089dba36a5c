using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>
/// Scalars that live for the whole process. TorchSharp hands libtorch the raw handle of a <see cref="Scalar"/>; a
/// temporary one (an implicit conversion, or the alpha of 1 that <c>Tensor.add(Tensor)</c> creates internally) can be
/// finalized by a garbage collection on another thread while libtorch still reads it, which fails with "Unknown
/// scalar type" or silently computes with a wrong value. StableLora therefore bans those conversions and operators
/// (eng/BannedSymbols.txt) and goes through <see cref="TensorMath"/>, which keeps every Scalar alive for the call.
/// </summary>
internal static class TorchScalars
{
    public static readonly Scalar One = 1.ToScalar();
}

/// <summary>Tensor arithmetic with numbers (and tensor addition) whose Scalars outlive the libtorch call.</summary>
internal static class TensorMath
{
    public static Tensor Plus(this Tensor left, Tensor right) => left.add(right, TorchScalars.One);

    public static Tensor PlusInPlace(this Tensor left, Tensor right) => left.add_(right, TorchScalars.One);

    public static Tensor Plus(this Tensor left, double right)
    {
        using var value = right.ToScalar();
        return left.add(value, TorchScalars.One);
    }

    public static Tensor PlusInPlace(this Tensor left, double right)
    {
        using var value = right.ToScalar();
        return left.add_(value, TorchScalars.One);
    }

    public static Tensor Minus(this Tensor left, double right)
    {
        using var value = right.ToScalar();
        return left.sub(value);
    }

    /// <summary><paramref name="left"/> - <paramref name="right"/> computed as -right + left, as TorchSharp's <c>double - Tensor</c> operator does.</summary>
    public static Tensor SubtractedFrom(this Tensor right, double left)
    {
        using var value = left.ToScalar();
        using var negated = right.negative();
        return negated.add(value, TorchScalars.One);
    }

    public static Tensor Times(this Tensor left, double right)
    {
        using var value = right.ToScalar();
        return left.mul(value);
    }

    public static Tensor Times(this Tensor left, long right)
    {
        using var value = right.ToScalar();
        return left.mul(value);
    }

    public static Tensor TimesInPlace(this Tensor left, double right)
    {
        using var value = right.ToScalar();
        return left.mul_(value);
    }

    public static Tensor DividedBy(this Tensor left, double right)
    {
        using var value = right.ToScalar();
        return left.div(value);
    }

    public static Tensor DividedByInPlace(this Tensor left, double right)
    {
        using var value = right.ToScalar();
        return left.div_(value);
    }

    /// <summary><paramref name="left"/> / <paramref name="right"/> elementwise (TorchSharp's <c>double / Tensor</c>).</summary>
    public static Tensor Divides(this Tensor right, double left)
    {
        using var value = left.ToScalar();
        return right.reciprocal().mul_(value);
    }

    public static Tensor Clamp(this Tensor input, double min, double max)
    {
        using var low = min.ToScalar();
        using var high = max.ToScalar();
        return input.clamp(low, high);
    }

    public static Tensor ClampMax(this Tensor input, double max)
    {
        using var high = max.ToScalar();
        return input.clamp_max(high);
    }

    public static Tensor Pow(this Tensor input, double exponent)
    {
        using var value = exponent.ToScalar();
        return input.pow(value);
    }

    /// <summary>0, 1, ..., count - 1.</summary>
    public static Tensor Arange(long count, ScalarType dtype, Device device)
    {
        using var stop = count.ToScalar();
        return arange(stop, dtype, device);
    }

    public static Tensor FillInPlace(this Tensor input, double value)
    {
        using var scalar = value.ToScalar();
        return input.fill_(scalar);
    }
}
