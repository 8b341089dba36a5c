using TorchSharp;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Kernels;

/// <summary>A kernel that computed a wrong result in the check: which, on what, and how far off.</summary>
/// <param name="Kernel">The operation, e.g. "convolution input gradient".</param>
/// <param name="Case">The shapes it ran on, e.g. "3x3, 24 -> 40 channels, 12x12, stride 1".</param>
/// <param name="RelativeError">max |result - reference| / max |reference|; infinity when the result is not finite.</param>
internal sealed record KernelDefect(string Kernel, string Case, double RelativeError)
{
    public override string ToString() =>
        double.IsInfinity(RelativeError) ? $"{Kernel} ({Case}): not finite" : $"{Kernel} ({Case}): relative error {RelativeError:G2}";
}

/// <summary>
/// Runs the libtorch CPU kernels StableLora depends on, in float32 with gradients, on small inputs with awkward and
/// SD-sized channel counts, and compares each result with a float64 reference computed without them (convolutions as
/// unfold + matrix product, normalisations and attention written out). Before each case it fills freed memory with
/// NaN, so a kernel that reads memory it never wrote shows as not finite instead of passing by luck.
/// </summary>
internal sealed class KernelCheck
{
    /// <summary>The largest relative error accepted (float32 rounding on these sizes stays below 1e-5).</summary>
    public const double Tolerance = 1e-4;

    /// <summary>Convolution cases: in and out channels, kernel, stride, padding, map side. Channel counts that are not
    /// multiples of 16 exercised the defect found on AMD Zen 5 (oneDNN's AVX2 and AVX-512 kernels).</summary>
    private static readonly (int In, int Out, int Kernel, int Stride, int Padding, int Side)[] ConvolutionCases =
    {
        (24, 40, 3, 1, 1, 12),
        (40, 24, 3, 1, 1, 12),
        (32, 4, 3, 1, 1, 12),   // a UNet's conv_out: its input gradient carries every LoRA gradient
        (4, 32, 3, 1, 1, 12),   // a UNet's conv_in
        (3, 32, 3, 1, 1, 12),   // a VAE's conv_in
        (24, 24, 3, 2, 1, 16),  // a downsampler
        (24, 40, 1, 1, 0, 12),  // a 1x1 shortcut or projection
        (320, 320, 3, 1, 1, 12), // SD 1.5's first block
        (24, 40, 3, 1, 1, 8),   // a small map (StableLora's matrix-product path)
        (40, 40, 3, 2, 1, 9),
    };

    private readonly Func<Tensor, Tensor, Tensor?, long, long, Tensor> _convolve;

    /// <param name="convolve">The convolution under test; StableLora's own (<see cref="CpuConvolution.Forward"/>) by default.</param>
    public KernelCheck(Func<Tensor, Tensor, Tensor?, long, long, Tensor>? convolve = null)
    {
        _convolve = convolve ?? CpuConvolution.Forward;
    }

    /// <summary>Every case whose result is wrong; empty when all are right.</summary>
    public IReadOnlyList<KernelDefect> Run()
    {
        var defects = new List<KernelDefect>();
        using var generator = new Generator(20261203, CPU);
        using var enableGrad = enable_grad();
        foreach (var c in ConvolutionCases)
            CheckConvolution(c.In, c.Out, c.Kernel, c.Stride, c.Padding, c.Side, generator, defects);
        CheckLinear(generator, defects);
        CheckBatchedMatrixProduct(generator, defects);
        CheckGroupNorm(generator, defects);
        CheckLayerNorm(generator, defects);
        CheckAttention(generator, defects);
        return defects;
    }

    private void CheckConvolution(int inChannels, int outChannels, int kernel, int stride, int padding, int side, Generator generator, List<KernelDefect> defects)
    {
        using var scope = NewDisposeScope();
        string name = $"{kernel}x{kernel}, {inChannels} -> {outChannels} channels, {side}x{side}, stride {stride}";
        var input = randn(new long[] { 2, inChannels, side, side }, generator: generator);
        var weight = randn(new long[] { outChannels, inChannels, kernel, kernel }, generator: generator).Times(1.0 / Math.Sqrt(inChannels * kernel * kernel));
        var bias = randn(new long[] { outChannels }, generator: generator);
        long outSide = (side + 2 * padding - kernel) / stride + 1;
        var upstream = randn(new long[] { 2, outChannels, outSide, outSide }, generator: generator);

        var (output, inputGrad, weightGrad) = Convolve(_convolve, input, weight, bias, upstream, stride, padding, ScalarType.Float32);
        var (refOutput, refInputGrad, refWeightGrad) = Convolve(CpuConvolution.AsMatrixProduct, input, weight, bias, upstream, stride, padding, ScalarType.Float64);
        Compare("convolution", name, output, refOutput, defects);
        Compare("convolution input gradient", name, inputGrad, refInputGrad, defects);
        Compare("convolution weight gradient", name, weightGrad, refWeightGrad, defects);
    }

    private static (Tensor Output, Tensor InputGrad, Tensor WeightGrad) Convolve(Func<Tensor, Tensor, Tensor?, long, long, Tensor> convolve,
        Tensor input, Tensor weight, Tensor bias, Tensor upstream, long stride, long padding, ScalarType dtype)
    {
        PoisonFreedMemory();
        var x = input.detach().to(dtype).requires_grad_(true);
        var w = weight.detach().to(dtype).requires_grad_(true);
        var y = convolve(x, w, bias.to(dtype), stride, padding);
        y.backward(new[] { upstream.to(dtype) });
        return (y.detach(), x.grad!, w.grad!);
    }

    private static void CheckLinear(Generator generator, List<KernelDefect> defects)
    {
        using var scope = NewDisposeScope();
        var input = randn(new long[] { 2, 77, 40 }, generator: generator);
        var weight = randn(new long[] { 24, 40 }, generator: generator);
        var bias = randn(new long[] { 24 }, generator: generator);
        var upstream = randn(new long[] { 2, 77, 24 }, generator: generator);
        var results = new List<Tensor[]>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            PoisonFreedMemory();
            var x = input.detach().to(dtype).requires_grad_(true);
            var w = weight.detach().to(dtype).requires_grad_(true);
            var y = dtype == ScalarType.Float32
                ? nn.functional.linear(x, w, bias)
                : x.matmul(w.t()).PlusInPlace(bias.to(dtype));
            y.backward(new[] { upstream.to(dtype) });
            results.Add(new[] { y.detach(), x.grad!, w.grad! });
        }

        const string Name = "77x40 by 40 -> 24";
        Compare("linear", Name, results[0][0], results[1][0], defects);
        Compare("linear input gradient", Name, results[0][1], results[1][1], defects);
        Compare("linear weight gradient", Name, results[0][2], results[1][2], defects);
    }

    private static void CheckBatchedMatrixProduct(Generator generator, List<KernelDefect> defects)
    {
        using var scope = NewDisposeScope();
        var left = randn(new long[] { 6, 77, 40 }, generator: generator);
        var right = randn(new long[] { 6, 40, 77 }, generator: generator);
        PoisonFreedMemory();
        var product = left.bmm(right);
        // The float64 reference sums the products elementwise, through no matrix-product kernel.
        var reference = (left.to(float64).unsqueeze(3) * right.to(float64).unsqueeze(1)).sum(2);
        Compare("batched matrix product", "6 x 77x40 by 40x77", product, reference, defects);
    }

    private static void CheckGroupNorm(Generator generator, List<KernelDefect> defects)
    {
        using var scope = NewDisposeScope();
        var input = randn(new long[] { 2, 24, 12, 12 }, generator: generator).Times(3.0).PlusInPlace(1.0);
        var weight = randn(new long[] { 24 }, generator: generator);
        var bias = randn(new long[] { 24 }, generator: generator);
        var upstream = randn(new long[] { 2, 24, 12, 12 }, generator: generator);
        var results = new List<Tensor[]>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            PoisonFreedMemory();
            var x = input.detach().to(dtype).requires_grad_(true);
            var w = weight.detach().to(dtype).requires_grad_(true);
            Tensor y;
            if (dtype == ScalarType.Float32)
            {
                y = nn.functional.group_norm(x, 8, w, bias, 1e-6);
            }
            else
            {
                var grouped = x.view(2, 8, -1);
                var centred = grouped - grouped.mean(new long[] { 2 }, keepdim: true);
                var variance = centred.Pow(2).mean(new long[] { 2 }, keepdim: true);
                var normalised = (centred / variance.Plus(1e-6).sqrt()).view(x.shape);
                y = (normalised * w.view(1, 24, 1, 1)).Plus(bias.to(dtype).view(1, 24, 1, 1));
            }

            y.backward(new[] { upstream.to(dtype) });
            results.Add(new[] { y.detach(), x.grad!, w.grad! });
        }

        const string Name = "24 channels in 8 groups, 12x12";
        Compare("group norm", Name, results[0][0], results[1][0], defects);
        Compare("group norm input gradient", Name, results[0][1], results[1][1], defects);
        Compare("group norm weight gradient", Name, results[0][2], results[1][2], defects);
    }

    private static void CheckLayerNorm(Generator generator, List<KernelDefect> defects)
    {
        using var scope = NewDisposeScope();
        var input = randn(new long[] { 2, 77, 40 }, generator: generator).Times(2.0).PlusInPlace(0.5);
        var weight = randn(new long[] { 40 }, generator: generator);
        var bias = randn(new long[] { 40 }, generator: generator);
        var upstream = randn(new long[] { 2, 77, 40 }, generator: generator);
        var results = new List<Tensor[]>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            PoisonFreedMemory();
            var x = input.detach().to(dtype).requires_grad_(true);
            Tensor y;
            if (dtype == ScalarType.Float32)
            {
                y = nn.functional.layer_norm(x, new long[] { 40 }, weight, bias, 1e-5);
            }
            else
            {
                var centred = x - x.mean(new long[] { 2 }, keepdim: true);
                var variance = centred.Pow(2).mean(new long[] { 2 }, keepdim: true);
                y = (centred / variance.Plus(1e-5).sqrt() * weight.to(dtype)).Plus(bias.to(dtype));
            }

            y.backward(new[] { upstream.to(dtype) });
            results.Add(new[] { y.detach(), x.grad! });
        }

        Compare("layer norm", "77x40", results[0][0], results[1][0], defects);
        Compare("layer norm input gradient", "77x40", results[0][1], results[1][1], defects);
    }

    private static void CheckAttention(Generator generator, List<KernelDefect> defects)
    {
        using var scope = NewDisposeScope();
        var shape = new long[] { 2, 3, 77, 40 };
        var query = randn(shape, generator: generator);
        var key = randn(shape, generator: generator);
        var value = randn(shape, generator: generator);
        var upstream = randn(shape, generator: generator);
        var results = new List<Tensor[]>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            PoisonFreedMemory();
            var q = query.detach().to(dtype).requires_grad_(true);
            var k = key.detach().to(dtype).requires_grad_(true);
            var v = value.detach().to(dtype).requires_grad_(true);
            var y = dtype == ScalarType.Float32
                ? nn.functional.scaled_dot_product_attention(q, k, v)
                : (q.matmul(k.transpose(-1, -2)).Times(1.0 / Math.Sqrt(40))).softmax(-1).matmul(v);
            y.backward(new[] { upstream.to(dtype) });
            results.Add(new[] { y.detach(), q.grad!, k.grad!, v.grad! });
        }

        const string Name = "2x3 heads, 77 tokens of 40";
        Compare("attention", Name, results[0][0], results[1][0], defects);
        Compare("attention query gradient", Name, results[0][1], results[1][1], defects);
        Compare("attention key gradient", Name, results[0][2], results[1][2], defects);
        Compare("attention value gradient", Name, results[0][3], results[1][3], defects);
    }

    private static void Compare(string kernel, string name, Tensor actual, Tensor reference, List<KernelDefect> defects)
    {
        using var scope = NewDisposeScope();
        var expected = reference.detach().to(float64);
        var got = actual.detach().to(float64);
        double error;
        if (!got.isfinite().all().item<bool>())
        {
            error = double.PositiveInfinity;
        }
        else
        {
            double scale = Math.Max(expected.abs().max().item<double>(), 1e-30);
            error = (got - expected).abs().max().item<double>() / scale;
        }

        if (!(error <= Tolerance))
            defects.Add(new KernelDefect(kernel, name, error));
    }

    /// <summary>Allocates and frees NaN-filled buffers of the sizes the cases use, so the allocator hands out poisoned memory next.</summary>
    private static void PoisonFreedMemory()
    {
        using var nan = double.NaN.ToScalar();
        for (long elements = 1 << 8; elements <= 1 << 20; elements <<= 1)
        {
            using var first = full(new[] { elements }, nan, float32);
            using var second = full(new[] { elements + elements / 2 }, nan, float32);
        }
    }
}
