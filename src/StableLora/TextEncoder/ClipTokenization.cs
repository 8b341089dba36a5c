namespace StableLora.TextEncoder;

/// <summary>One prompt encoded for the CLIP text encoder: fixed-length ids and attention mask, plus truncation facts.</summary>
public sealed class ClipTokenization
{
    internal ClipTokenization(long[] inputIds, long[] attentionMask, int tokenCount, int keptTokenCount)
    {
        InputIds = inputIds;
        AttentionMask = attentionMask;
        TokenCount = tokenCount;
        DroppedTokenCount = tokenCount - keptTokenCount;
    }

    /// <summary>
    /// <see cref="ClipTokenizer.MaxLength"/> ids: the start token, the prompt's first
    /// <see cref="ClipTokenizer.MaxLength"/> - 2 tokens, the end token, then padding ids.
    /// </summary>
    public long[] InputIds { get; }

    /// <summary>1 for the start token, the prompt tokens and the end token; 0 for the padding.</summary>
    public long[] AttentionMask { get; }

    /// <summary>
    /// The number of tokens the prompt encodes to before truncation, not counting the start and end tokens that
    /// <see cref="InputIds"/> adds (a special-token literal written in the prompt counts as one token).
    /// </summary>
    public int TokenCount { get; }

    /// <summary>Whether prompt tokens had to be dropped to fit <see cref="ClipTokenizer.MaxLength"/>.</summary>
    public bool Truncated => DroppedTokenCount > 0;

    /// <summary>How many prompt tokens at the end did not fit and were dropped (what the model never sees).</summary>
    public int DroppedTokenCount { get; }
}
