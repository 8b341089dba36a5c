using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Lora;

/// <summary>
/// Something that adds to a <see cref="Layers.Linear"/>'s or <see cref="Layers.Conv2d"/>'s output: a LoRA's
/// low-rank path, or a dense weight change (LoHa, LoKr, DoRA, full). The layer computes
/// <c>base(x) + Σ adapter(x)</c>; adapters are not submodules of the layer, so its state dict keeps the base keys.
/// </summary>
internal interface IWeightAdapter
{
    /// <summary>The adapter's contribution for <paramref name="input"/> (already multiplied by its multiplier), or null when it adds nothing this call.</summary>
    Tensor? Forward(Tensor input);

    /// <summary>The strength it is applied with (kohya's <c>multiplier</c>, a UI's LoRA weight).</summary>
    double Multiplier { get; set; }

    /// <summary>Its parameters that train (none for inference-only adapters).</summary>
    IEnumerable<TorchSharp.Modules.Parameter> TrainableParameters { get; }
}

/// <summary>The adapters attached to one layer, applied in the order they were attached.</summary>
internal sealed class AdapterSlot
{
    private readonly List<IWeightAdapter> _adapters = new();

    public IReadOnlyList<IWeightAdapter> Adapters => _adapters;

    public bool IsEmpty => _adapters.Count == 0;

    public void Add(IWeightAdapter adapter) => _adapters.Add(adapter);

    public bool Remove(IWeightAdapter adapter) => _adapters.Remove(adapter);

    /// <summary><paramref name="baseOutput"/> plus every adapter's contribution.</summary>
    public Tensor Apply(Tensor input, Tensor baseOutput)
    {
        var result = baseOutput;
        foreach (var adapter in _adapters)
        {
            if (adapter.Forward(input) is { } contribution)
                result = result.Plus(contribution);
        }

        return result;
    }
}

/// <summary>A layer that adapters can be attached to: its weight's geometry and its adapter slot.</summary>
internal interface IAdaptableLayer
{
    AdapterSlot Adapters { get; }

    TorchSharp.Modules.Parameter Weight { get; }

    TorchSharp.Modules.Parameter? Bias { get; }

    long InChannels { get; }

    long OutChannels { get; }

    /// <summary>1 for a Linear; the square kernel's side for a convolution.</summary>
    long KernelSize { get; }

    /// <summary>Whether the layer is a convolution (a 1x1 convolution too).</summary>
    bool IsConvolution { get; }

    long Stride { get; }

    long Padding { get; }
}
