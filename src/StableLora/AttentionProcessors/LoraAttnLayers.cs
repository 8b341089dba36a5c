using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.AttentionProcessors;

/// <summary>
/// One adapter's LoRA layers for one attention, named as diffusers' <c>LoRAAttnProcessor</c> names them
/// (<c>to_q_lora</c>, <c>to_k_lora</c>, <c>to_v_lora</c>, <c>to_out_lora</c>), so that its state dict under the
/// processor name gives the AttnProcsLayers keys of the seed's <c>lora_weights.pt</c>.
/// </summary>
internal sealed class LoraAttnLayers : nn.Module
{
    private readonly LoraLinearLayer? to_q_lora;
    private readonly LoraLinearLayer? to_k_lora;
    private readonly LoraLinearLayer? to_v_lora;
    private readonly LoraLinearLayer? to_out_lora;

    public LoraAttnLayers(LoraLinearLayer? query, LoraLinearLayer? key, LoraLinearLayer? value, LoraLinearLayer? output) : base("LoRAAttnProcessor")
    {
        to_q_lora = query;
        to_k_lora = key;
        to_v_lora = value;
        to_out_lora = output;
        RegisterComponents();
    }

    public LoraLinearLayer? Query => to_q_lora;

    public LoraLinearLayer? Key => to_k_lora;

    public LoraLinearLayer? Value => to_v_lora;

    public LoraLinearLayer? Output => to_out_lora;

    /// <summary>The layers with the attention projection each one adapts ("to_q", "to_k", "to_v", "to_out.0").</summary>
    public IEnumerable<(string Projection, LoraLinearLayer Layer)> Layers()
    {
        if (to_q_lora is not null)
            yield return ("to_q", to_q_lora);
        if (to_k_lora is not null)
            yield return ("to_k", to_k_lora);
        if (to_v_lora is not null)
            yield return ("to_v", to_v_lora);
        if (to_out_lora is not null)
            yield return ("to_out.0", to_out_lora);
    }
}

/// <summary>
/// Attention with one or more LoRA adapters added to the projections: base(x) + s * up(down(x)) per adapter, where
/// s = the adapter's weight x the call's LoRA scale (diffusers' <c>cross_attention_kwargs={"scale": s}</c>).
/// </summary>
internal sealed class LoraAttnProcessor : IAttentionProcessor, IAttentionProjections
{
    private readonly List<(LoraAttnLayers Layers, double Weight)> _adapters = new();

    public IReadOnlyList<(LoraAttnLayers Layers, double Weight)> Adapters => _adapters;

    public void Add(LoraAttnLayers layers, double weight) => _adapters.Add((layers, weight));

    public bool Remove(LoraAttnLayers layers) => _adapters.RemoveAll(a => ReferenceEquals(a.Layers, layers)) > 0;

    public Tensor Process(Attention attention, Tensor hiddenStates, Tensor? encoderHiddenStates, AttentionOptions options) =>
        AttentionComputation.Run(attention, hiddenStates, encoderHiddenStates, options, this);

    public Tensor Query(Attention attention, Tensor input, AttentionOptions options) =>
        Adapt(attention.ToQ.forward(input), input, options, l => l.Query);

    public Tensor Key(Attention attention, Tensor input, AttentionOptions options) =>
        Adapt(attention.ToK.forward(input), input, options, l => l.Key);

    public Tensor Value(Attention attention, Tensor input, AttentionOptions options) =>
        Adapt(attention.ToV.forward(input), input, options, l => l.Value);

    public Tensor Output(Attention attention, Tensor input, AttentionOptions options) =>
        Adapt(attention.ToOut.forward(input), input, options, l => l.Output);

    private Tensor Adapt(Tensor baseOutput, Tensor input, AttentionOptions options, Func<LoraAttnLayers, LoraLinearLayer?> select)
    {
        var result = baseOutput;
        foreach (var (layers, weight) in _adapters)
        {
            double scale = weight * options.LoraScale;
            if (select(layers) is { } layer && scale != 0)
                result = result.Plus(scale == 1.0 ? layer.Forward(input) : layer.Forward(input).Times(scale));
        }

        return result;
    }
}
