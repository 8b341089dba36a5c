using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.AttentionProcessors;

/// <summary>
/// The attention arithmetic shared by every processor: optional group norm, projections, multi-head scaled
/// dot-product attention (optionally in slices), output projection, optional residual and rescale. Matches
/// diffusers' <c>AttnProcessor2_0</c> for 3-D (token) and 4-D (feature map) inputs.
/// </summary>
internal static class AttentionComputation
{
    public static Tensor Run(Attention attention, Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        var shape = attention.Shape;
        var residual = hiddenStates;
        bool spatial = hiddenStates.dim() == 4;
        long batch = hiddenStates.shape[0];
        long channels = 0, height = 0, width = 0;
        var tokens = hiddenStates;
        if (spatial)
        {
            (channels, height, width) = (hiddenStates.shape[1], hiddenStates.shape[2], hiddenStates.shape[3]);
            tokens = hiddenStates.view(batch, channels, height * width).transpose(1, 2);
        }

        if (attention.GroupNorm is { } norm)
            tokens = norm.forward(tokens.transpose(1, 2)).transpose(1, 2);

        var context = encoderHiddenStates ?? tokens;
        var query = SplitHeads(attention.ToQ.forward(tokens), batch, shape);
        var key = SplitHeads(attention.ToK.forward(context), batch, shape);
        var value = SplitHeads(attention.ToV.forward(context), batch, shape);

        var outputDType = query.dtype;
        if (shape.UpcastAttention && query.dtype is ScalarType.Float16 or ScalarType.BFloat16)
        {
            query = query.to(float32);
            key = key.to(float32);
            value = value.to(float32);
        }

        var attended = attention.SliceSize is { } slice ? SlicedAttention(query, key, value, slice) : nn.functional.scaled_dot_product_attention(query, key, value);
        var merged = attended.transpose(1, 2).reshape(batch, -1, shape.Heads * shape.HeadDim).to(outputDType);
        var output = attention.ToOut.forward(merged);

        if (spatial)
            output = output.transpose(-1, -2).reshape(batch, channels, height, width);
        if (shape.ResidualConnection)
            output = output.Plus(residual);
        if (shape.RescaleOutputFactor != 1.0)
            output = output.DividedBy(shape.RescaleOutputFactor);
        return output;
    }

    private static Tensor SplitHeads(Tensor projected, long batch, AttentionShape shape) =>
        projected.view(batch, -1, shape.Heads, shape.HeadDim).transpose(1, 2);

    /// <summary>diffusers' sliced attention: the (batch x heads) axis in chunks, each attended separately.</summary>
    private static Tensor SlicedAttention(Tensor query, Tensor key, Tensor value, int sliceSize)
    {
        long batch = query.shape[0], heads = query.shape[1];
        var q = query.reshape(batch * heads, query.shape[2], query.shape[3]);
        var k = key.reshape(batch * heads, key.shape[2], key.shape[3]);
        var v = value.reshape(batch * heads, value.shape[2], value.shape[3]);
        var slices = new List<Tensor>();
        for (long start = 0; start < batch * heads; start += sliceSize)
        {
            long length = Math.Min(sliceSize, batch * heads - start);
            slices.Add(nn.functional.scaled_dot_product_attention(q.narrow(0, start, length), k.narrow(0, start, length), v.narrow(0, start, length)));
        }

        return cat(slices, 0).reshape(batch, heads, query.shape[2], query.shape[3]);
    }
}
