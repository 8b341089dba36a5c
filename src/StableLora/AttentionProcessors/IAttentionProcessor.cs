using static TorchSharp.torch;

namespace StableLora.AttentionProcessors;

/// <summary>Computes one attention call for an <see cref="Attention"/> module (diffusers' attention processor).</summary>
internal interface IAttentionProcessor
{
    Tensor Process(Attention attention, Tensor hiddenStates, Tensor? encoderHiddenStates, AttentionOptions options);
}

/// <summary>The four projections of an attention call; LoRA processors add their low-rank terms here.</summary>
internal interface IAttentionProjections
{
    Tensor Query(Attention attention, Tensor input, AttentionOptions options);

    Tensor Key(Attention attention, Tensor input, AttentionOptions options);

    Tensor Value(Attention attention, Tensor input, AttentionOptions options);

    Tensor Output(Attention attention, Tensor input, AttentionOptions options);
}

/// <summary>The base projections of the module, without any adapter.</summary>
internal sealed class PlainProjections : IAttentionProjections
{
    public static PlainProjections Instance { get; } = new();

    public Tensor Query(Attention attention, Tensor input, AttentionOptions options) => attention.ToQ.forward(input);

    public Tensor Key(Attention attention, Tensor input, AttentionOptions options) => attention.ToK.forward(input);

    public Tensor Value(Attention attention, Tensor input, AttentionOptions options) => attention.ToV.forward(input);

    public Tensor Output(Attention attention, Tensor input, AttentionOptions options) => attention.ToOut.forward(input);
}

/// <summary>Plain attention through <c>scaled_dot_product_attention</c> (diffusers' <c>AttnProcessor2_0</c>).</summary>
internal sealed class SdpaAttnProcessor : IAttentionProcessor
{
    public static SdpaAttnProcessor Instance { get; } = new();

    public Tensor Process(Attention attention, Tensor hiddenStates, Tensor? encoderHiddenStates, AttentionOptions options) =>
        AttentionComputation.Run(attention, hiddenStates, encoderHiddenStates, options, PlainProjections.Instance);
}
