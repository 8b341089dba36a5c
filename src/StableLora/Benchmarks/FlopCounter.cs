using StableLora.Lora;
using static TorchSharp.torch;

namespace StableLora.Benchmarks;

/// <summary>
/// Counts a forward pass's FLOPs as <c>torch.utils.flop_counter</c> counts them: 2 per multiply-add in every linear
/// layer and convolution and in attention's two matrix products (scores and weighted values). It needs no code in the
/// models: while attached, a counting adapter on every <see cref="IAdaptableLayer"/> reads each call's input (it adds
/// nothing to the output), and an attention's products are counted at its key projection, from the shape its query
/// projection saw last (<c>to_q</c>/<c>to_k</c> in the UNet and VAE, <c>q_proj</c>/<c>k_proj</c> in CLIP).
/// </summary>
internal sealed class FlopCounter : IDisposable
{
    private readonly List<(AdapterSlot Slot, IWeightAdapter Adapter)> _attached = new();

    private FlopCounter(IEnumerable<nn.Module> models)
    {
        foreach (var model in models)
        {
            var seen = new HashSet<IAdaptableLayer>(ReferenceEqualityComparer.Instance);
            var layers = model.named_modules().Prepend(("", model))
                .Where(m => m.Item2 is IAdaptableLayer layer && seen.Add(layer))
                .Select(m => (Parent: m.Item1.Contains('.') ? m.Item1[..m.Item1.LastIndexOf('.')] : "", Leaf: m.Item1[(m.Item1.LastIndexOf('.') + 1)..], Layer: (IAdaptableLayer)m.Item2))
                .ToList();
            // Registered before the key projections are visited: CLIP declares k_proj before q_proj.
            var queries = layers.Where(l => l.Leaf is "to_q" or "q_proj")
                .ToDictionary(l => l.Parent, l => new QueryShape(l.Layer.OutChannels), StringComparer.Ordinal);
            foreach (var (parent, leaf, layer) in layers)
            {
                var query = leaf is "to_q" or "q_proj" ? queries[parent] : null;
                var keyOf = leaf is "to_k" or "k_proj" ? queries.GetValueOrDefault(parent) : null;
                var adapter = new CountingAdapter(this, layer, query, keyOf);
                layer.Adapters.Add(adapter);
                _attached.Add((layer.Adapters, adapter));
            }
        }
    }

    /// <summary>FLOPs counted since the counter was attached.</summary>
    public long Flops { get; private set; }

    /// <summary>Attaches a counter to every linear layer and convolution of <paramref name="models"/>; dispose it to detach.</summary>
    public static FlopCounter Attach(params nn.Module[] models) => new(models);

    public void Dispose()
    {
        foreach (var (slot, adapter) in _attached)
            slot.Remove(adapter);
        _attached.Clear();
    }

    /// <summary>The last input an attention's query projection saw: batch, query tokens, and the attention's width (heads x head size).</summary>
    private sealed class QueryShape(long innerDim)
    {
        public long InnerDim { get; } = innerDim;

        public long Batch { get; set; }

        public long Tokens { get; set; }
    }

    private sealed class CountingAdapter(FlopCounter counter, IAdaptableLayer layer, QueryShape? query, QueryShape? keyOf) : IWeightAdapter
    {
        public double Multiplier { get; set; } = 1;

        public IEnumerable<TorchSharp.Modules.Parameter> TrainableParameters => [];

        public Tensor? Forward(Tensor input)
        {
            counter.Flops += layer.IsConvolution ? ConvolutionFlops(input) : 2 * input.NumberOfElements * layer.OutChannels;
            if (query is not null)
                (query.Batch, query.Tokens) = (input.shape[0], input.shape[1]);
            if (keyOf is not null)
                counter.Flops += 4 * keyOf.Batch * keyOf.Tokens * input.shape[1] * keyOf.InnerDim;
            return null;
        }

        private long ConvolutionFlops(Tensor input)
        {
            long Out(long size) => (size + 2 * layer.Padding - layer.KernelSize) / layer.Stride + 1;
            long outputs = input.shape[0] * layer.OutChannels * Out(input.shape[2]) * Out(input.shape[3]);
            return 2 * outputs * layer.InChannels * layer.KernelSize * layer.KernelSize;
        }
    }
}
