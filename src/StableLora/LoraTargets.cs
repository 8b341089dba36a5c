namespace StableLora;

/// <summary>Which projections of an attention get LoRA layers.</summary>
[Flags]
public enum LoraTargets
{
    /// <summary>No projection.</summary>
    None = 0,

    /// <summary>The query projection <c>to_q</c>.</summary>
    Query = 1,

    /// <summary>The key projection <c>to_k</c>.</summary>
    Key = 2,

    /// <summary>The value projection <c>to_v</c>.</summary>
    Value = 4,

    /// <summary>The output projection <c>to_out.0</c>.</summary>
    Output = 8,

    /// <summary>All four projections, as diffusers' LoRAAttnProcessor adapts them.</summary>
    All = Query | Key | Value | Output,
}

/// <summary>Which attentions of the UNet get LoRA layers.</summary>
public enum LoraAttentionKinds
{
    /// <summary>Self-attention (<c>attn1</c>) and cross-attention (<c>attn2</c>), as diffusers' LoRAAttnProcessor does.</summary>
    All,

    /// <summary>Only the self-attentions (<c>attn1</c>).</summary>
    SelfAttentionOnly,

    /// <summary>Only the cross-attentions to the text (<c>attn2</c>).</summary>
    CrossAttentionOnly,
}
