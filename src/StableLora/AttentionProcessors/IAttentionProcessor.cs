using static TorchSharp.torch;

namespace StableLora.AttentionProcessors;

/// <summary>Computes one attention call for an <see cref="Attention"/> module (diffusers' attention processor).</summary>
internal interface IAttentionProcessor
{
    Tensor Process(Attention attention, Tensor hiddenStates, Tensor? encoderHiddenStates, AttentionOptions options);
}

/// <summary>
/// Attention through <c>scaled_dot_product_attention</c> (diffusers' <c>AttnProcessor2_0</c>), or in slices when the
/// module's <see cref="Attention.SliceSize"/> is set. LoRA is not the processor's business: adapters live on the
/// projections themselves (<see cref="Lora.IAdaptableLayer"/>).
/// </summary>
internal sealed class SdpaAttnProcessor : IAttentionProcessor
{
    public static SdpaAttnProcessor Instance { get; } = new();

    public Tensor Process(Attention attention, Tensor hiddenStates, Tensor? encoderHiddenStates, AttentionOptions options) =>
        AttentionComputation.Run(attention, hiddenStates, encoderHiddenStates);
}
