using TorchSharp;
using Xunit.Sdk;

namespace StableLora.Tests.Infrastructure;

internal static class TensorAssert
{
    /// <summary>Asserts |actual - expected| &lt;= tol.Abs + tol.Rel * |expected| elementwise, reporting the worst element.</summary>
    public static void Close(torch.Tensor expected, torch.Tensor actual, Tolerance tolerance, string label = "tensor")
    {
        using var scope = torch.NewDisposeScope();
        Assert.Equal(expected.shape, actual.shape);
        var e = expected.detach().cpu().to(torch.float64);
        var a = actual.detach().cpu().to(torch.float64);
        var difference = (a - e).abs();
        var allowed = tolerance.Abs + tolerance.Rel * e.abs();
        var excess = difference - allowed;
        double worstExcess = excess.max().item<double>();
        if (worstExcess > 0 || double.IsNaN(worstExcess) || a.isnan().any().item<bool>())
        {
            long index = excess.flatten().argmax().item<long>();
            double maxDiff = difference.max().item<double>();
            throw new XunitException(
                $"{label}: {excess.gt(0).sum().item<long>()} of {e.NumberOfElements} elements outside abs {tolerance.Abs:G3} + rel {tolerance.Rel:G3}; " +
                $"max |diff| {maxDiff:G6}; worst at flat index {index}: expected {e.flatten()[index].item<double>():G9}, got {a.flatten()[index].item<double>():G9}");
        }
    }

    /// <summary>
    /// Asserts max |actual - expected| &lt;= <paramref name="relative"/> x max |expected|: the error measured against the
    /// tensor's scale. For sums of many terms (gradients of weights) an element that cancels to near zero carries the
    /// rounding of its large terms, so an elementwise relative bound would measure the cancellation, not the error.
    /// </summary>
    public static void CloseToScale(torch.Tensor expected, torch.Tensor actual, double relative, string label = "tensor")
    {
        using var scope = torch.NewDisposeScope();
        Assert.Equal(expected.shape, actual.shape);
        var e = expected.detach().cpu().to(torch.float64);
        var a = actual.detach().cpu().to(torch.float64);
        double scale = e.abs().max().item<double>();
        double worst = (a - e).abs().max().item<double>();
        if (!(worst <= relative * scale))
            throw new XunitException($"{label}: max |diff| {worst:G6} is {worst / scale:G3} of the largest magnitude {scale:G6} (allowed {relative:G3})");
    }

    /// <summary>Max |actual - expected| (for tests that report a measured difference).</summary>
    public static double MaxAbsDiff(torch.Tensor expected, torch.Tensor actual)
    {
        using var scope = torch.NewDisposeScope();
        return (actual.detach().cpu().to(torch.float64) - expected.detach().cpu().to(torch.float64)).abs().max().item<double>();
    }

    /// <summary>True when both tensors have the same shape, dtype and bytes.</summary>
    public static bool BitEqual(torch.Tensor first, torch.Tensor second)
    {
        if (!first.shape.SequenceEqual(second.shape) || first.dtype != second.dtype)
            return false;
        using var a = first.detach().cpu().contiguous();
        using var b = second.detach().cpu().contiguous();
        return a.bytes.SequenceEqual(b.bytes);
    }

    /// <summary>Asserts identical shape, dtype and bits.</summary>
    public static void Identical(torch.Tensor expected, torch.Tensor actual, string label = "tensor")
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(expected.dtype, actual.dtype);
        if (!BitEqual(expected, actual))
            throw new XunitException($"{label}: tensors differ (max |diff| {MaxAbsDiff(expected, actual):G6})");
    }
}
