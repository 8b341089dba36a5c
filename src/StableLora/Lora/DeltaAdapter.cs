using StableLora.Layers;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Lora;

/// <summary>
/// An inference-only adapter that adds a precomputed dense weight change: the layer computes
/// <c>base(x) + multiplier · op(x, ΔW, Δb)</c> (a linear map or a convolution with the layer's stride and padding).
/// LoHa, LoKr, Tucker LoCon, DoRA and full-difference modules are applied this way; the change is linear in the
/// multiplier, so a new strength costs nothing. ΔW is held in the layer's dtype: as much memory as the layer's weight.
/// </summary>
internal sealed class DeltaAdapter : IWeightAdapter, IDisposable
{
    private readonly Tensor _delta;
    private readonly Tensor? _biasDelta;
    private readonly bool _convolution;
    private readonly long _stride;
    private readonly long _padding;

    public DeltaAdapter(IAdaptableLayer target, Tensor delta, Tensor? biasDelta)
    {
        var weight = target.Weight;
        _delta = delta.to(weight.dtype, weight.device).DetachFromDisposeScope();
        _biasDelta = biasDelta?.to(weight.dtype, weight.device).DetachFromDisposeScope();
        _convolution = target.IsConvolution;
        _stride = target.Stride;
        _padding = target.Padding;
    }

    public double Multiplier { get; set; } = 1.0;

    public IEnumerable<Parameter> TrainableParameters => Array.Empty<Parameter>();

    public Tensor Delta => _delta;

    public Tensor? Forward(Tensor input)
    {
        if (Multiplier == 0)
            return null;
        var delta = _delta.to(input.dtype);
        var bias = _biasDelta?.to(input.dtype);
        var result = _convolution ? CpuConvolution.Forward(input, delta, bias, _stride, _padding) : nn.functional.linear(input, delta, bias);
        return Multiplier == 1.0 ? result : result.Times(Multiplier);
    }

    public void Dispose()
    {
        _delta.Dispose();
        _biasDelta?.Dispose();
    }
}
