using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>A 2-D convolution with the parameter names of <c>torch.nn.Conv2d</c>.</summary>
internal sealed class Conv2d : nn.Module<Tensor, Tensor>, IInitializable
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private readonly long[] _stride;
    private readonly long[] _padding;

    public Conv2d(long inChannels, long outChannels, long kernelSize, TensorSpec spec, long stride = 1, long padding = 0, bool hasBias = true)
        : base(nameof(Conv2d))
    {
        InChannels = inChannels;
        OutChannels = outChannels;
        KernelSize = kernelSize;
        _stride = new[] { stride, stride };
        _padding = new[] { padding, padding };
        weight = spec.NewParameter(outChannels, inChannels, kernelSize, kernelSize);
        bias = hasBias ? spec.NewParameter(outChannels) : null;
        RegisterComponents();
    }

    public long InChannels { get; }

    public long OutChannels { get; }

    public long KernelSize { get; }

    public Parameter Weight => weight;

    public Parameter? Bias => bias;

    /// <summary>
    /// Feature maps up to this many pixels are convolved on the CPU as one matrix product over unfolded patches.
    /// libtorch 2.10's CPU convolution (oneDNN) is slow on small maps with many channels: SD 1.5's 1280-channel
    /// 3x3 convolution on 8x8 takes 78 ms forward where the matrix product takes 21 ms (and 116 against 47 ms with
    /// backward); from 16x16 on both take the same time. docs/benchmarks.md has the measurements.
    /// </summary>
    public const long SmallMapPixels = 100;

    public override Tensor forward(Tensor input)
    {
        var output = IsSmallCpuMap(input) ? ConvolveAsMatrixProduct(input) : nn.functional.conv2d(input, weight, bias, _stride, _padding);
        FlopCounter.Add(2 * output.NumberOfElements * InChannels * KernelSize * KernelSize);
        return output;
    }

    private bool IsSmallCpuMap(Tensor input) =>
        KernelSize > 1 && input.device_type == DeviceType.CPU && input.dim() == 4 && input.shape[2] * input.shape[3] <= SmallMapPixels;

    private Tensor ConvolveAsMatrixProduct(Tensor input)
    {
        using var scope = NewDisposeScope();
        long height = (input.shape[2] + 2 * _padding[0] - KernelSize) / _stride[0] + 1;
        long width = (input.shape[3] + 2 * _padding[1] - KernelSize) / _stride[1] + 1;
        var patches = nn.functional.unfold(input, KernelSize, padding: _padding[0], stride: _stride[0]);
        var product = weight.view(OutChannels, -1).matmul(patches);
        if (bias is not null)
            product = product.PlusInPlace(bias.view(1, OutChannels, 1));
        return product.view(input.shape[0], OutChannels, height, width).MoveToOuterDisposeScope();
    }

    public void Initialize(Generator generator) =>
        PyTorchInit.KaimingUniformWithBias(weight, bias, InChannels * KernelSize * KernelSize, generator);
}
