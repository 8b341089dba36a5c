using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.TextEncoder;

/// <summary>
/// Prompts longer than CLIP's 75-token window, the two ways the SD 1.x tools handle them. Both cut the token ids into
/// chunks of 77 (start token, 75 ids, end token), encode every chunk on its own (positions 0..76 each) and join the
/// chunks' hidden states along the sequence; they differ in how the caption is cut and joined:
/// <list type="bullet">
/// <item>kohya-ss/sd-scripts' training (<c>max_token_length</c> 150 or 225): the caption is tokenized to
/// <c>max_token_length</c> + 2 ids (start, at most that many tokens, end, end-token padding), the ids after the start token
/// are cut into <c>max_token_length</c> / 75 runs of 75, each run gets the start token in front and the sequence's last id
/// (an end token) behind, and the joined hidden states keep the first chunk's start state, every chunk's 75 middle states
/// and the last chunk's end state: <c>max_token_length</c> + 2 states.</item>
/// <item>AUTOMATIC1111's generation: the prompt's tokens are cut into as many 75-token chunks as needed (a chunk that
/// would end within <see cref="CommaBacktrack"/> tokens after a comma ends at the comma instead, the rest moving to the
/// next chunk), each padded with end tokens and wrapped in start and end tokens, and all 77 states of every chunk are
/// kept: 77 x chunks states.</item>
/// </list>
/// </summary>
internal static class PromptChunks
{
    /// <summary>Prompt tokens per chunk (77 positions less the start and end token).</summary>
    public const int ChunkTokens = 75;

    /// <summary>Positions per chunk, as the text encoder takes them.</summary>
    public const int ChunkLength = ChunkTokens + 2;

    /// <summary>AUTOMATIC1111's default "comma padding backtrack": how far back a chunk may end early at a comma.</summary>
    public const int CommaBacktrack = 20;

    /// <summary>The <c>max_token_length</c> values sd-scripts accepts: 75 (one chunk, the default), 150 and 225.</summary>
    public static readonly IReadOnlyList<int> MaxTokenLengths = [75, 150, 225];

    /// <summary>
    /// sd-scripts' training ids of a caption with <c>max_token_length</c> <paramref name="maxTokenLength"/>:
    /// (<paramref name="maxTokenLength"/> / 75) chunks of 77 ids, one after the other. With 75 it is the plain 77-id
    /// encoding (<see cref="ClipTokenizer.Encode"/>).
    /// </summary>
    public static long[] KohyaIds(ClipTokenizer tokenizer, string caption, int maxTokenLength)
    {
        int chunks = maxTokenLength / ChunkTokens;
        // The caption tokenized to maxTokenLength + 2 ids: start, tokens (truncated), end, then end-token padding.
        var tokens = tokenizer.Tokenize(caption);
        int kept = Math.Min(tokens.Count, maxTokenLength);
        var full = new long[maxTokenLength + 2];
        Array.Fill(full, tokenizer.PadTokenId);
        full[0] = tokenizer.BosTokenId;
        for (int i = 0; i < kept; i++)
            full[1 + i] = tokens[i];
        full[1 + kept] = tokenizer.EosTokenId;

        var ids = new long[chunks * ChunkLength];
        for (int c = 0; c < chunks; c++)
        {
            int at = c * ChunkLength;
            ids[at] = full[0];
            Array.Copy(full, 1 + c * ChunkTokens, ids, at + 1, ChunkTokens);
            ids[at + ChunkLength - 1] = full[^1];
        }

        return ids;
    }

    /// <summary>
    /// sd-scripts' joining of the chunks' hidden states [B, chunks x 77, hidden] into [B, chunks x 75 + 2, hidden]: the
    /// first chunk's start state, the 75 middle states of each chunk, the last chunk's end state. One chunk is returned as
    /// it is.
    /// </summary>
    public static Tensor KohyaJoin(Tensor hidden, int chunks)
    {
        if (chunks == 1)
            return hidden;
        long batch = hidden.shape[0], width = hidden.shape[^1];
        var perChunk = hidden.view(batch, chunks, ChunkLength, width);
        var middles = perChunk.narrow(2, 1, ChunkTokens).reshape(batch, chunks * ChunkTokens, width);
        var first = hidden.narrow(1, 0, 1);
        var last = hidden.narrow(1, hidden.shape[1] - 1, 1);
        return cat(new[] { first, middles, last }, 1);
    }

    /// <summary>
    /// sd-scripts' text conditioning of a batch of captions: [B, <paramref name="maxTokenLength"/> + 2, hidden]. Runs with
    /// whatever gradient mode the caller is in (the text encoder may be trained).
    /// </summary>
    public static Tensor KohyaConditioning(ClipTextModel textEncoder, ClipTokenizer tokenizer, IReadOnlyList<string> captions, int maxTokenLength, int clipSkip)
    {
        using var scope = NewDisposeScope();
        int chunks = maxTokenLength / ChunkTokens;
        var ids = new long[captions.Count * chunks * ChunkLength];
        for (int row = 0; row < captions.Count; row++)
            KohyaIds(tokenizer, captions[row], maxTokenLength).CopyTo(ids, row * chunks * ChunkLength);
        var idTensor = tensor(ids, [captions.Count * chunks, ChunkLength], int64);
        var hidden = textEncoder.Conditioning(idTensor.to(textEncoder.Spec.Device), clipSkip);
        var joined = KohyaJoin(hidden.reshape(captions.Count, chunks * ChunkLength, hidden.shape[^1]), chunks);
        return joined.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// AUTOMATIC1111's chunks of a prompt: each 77 ids (start, up to 75 tokens padded with end tokens, end). An empty prompt
    /// is one chunk. <paramref name="commaBacktrack"/> 0 cuts strictly every 75 tokens.
    /// </summary>
    public static List<long[]> A1111Chunks(ClipTokenizer tokenizer, string prompt, int commaBacktrack = CommaBacktrack)
    {
        var tokens = tokenizer.Tokenize(prompt);
        int? comma = CommaId(tokenizer);
        var chunks = new List<long[]>();
        var current = new List<int>(ChunkTokens);
        int lastComma = -1;

        void Close()
        {
            var ids = new long[ChunkLength];
            Array.Fill(ids, tokenizer.EosTokenId);
            ids[0] = tokenizer.BosTokenId;
            for (int i = 0; i < current.Count; i++)
                ids[1 + i] = current[i];
            chunks.Add(ids);
            current.Clear();
            lastComma = -1;
        }

        foreach (int token in tokens)
        {
            if (token == comma)
            {
                lastComma = current.Count;
            }
            else if (commaBacktrack > 0 && current.Count == ChunkTokens && lastComma != -1 && current.Count - lastComma <= commaBacktrack)
            {
                // The full chunk ends just after its last comma; the tokens after that comma start the next chunk.
                var moved = current.GetRange(lastComma + 1, current.Count - lastComma - 1);
                current.RemoveRange(lastComma + 1, moved.Count);
                Close();
                current.AddRange(moved);
            }

            if (current.Count == ChunkTokens)
                Close();
            current.Add(token);
        }

        if (current.Count > 0 || chunks.Count == 0)
            Close();
        return chunks;
    }

    /// <summary>A chunk holding no prompt token (start, then 76 end tokens): what a shorter prompt is padded with.</summary>
    public static long[] EmptyChunk(ClipTokenizer tokenizer)
    {
        var ids = new long[ChunkLength];
        Array.Fill(ids, tokenizer.EosTokenId);
        ids[0] = tokenizer.BosTokenId;
        return ids;
    }

    /// <summary>
    /// AUTOMATIC1111's conditioning of several prompts padded to the same chunk count (the longest's): each prompt's
    /// chunks, then empty chunks, encoded chunk by chunk and joined: [prompts, chunks x 77, hidden].
    /// </summary>
    public static Tensor A1111Conditioning(ClipTextModel textEncoder, ClipTokenizer tokenizer, IReadOnlyList<string> prompts, int clipSkip)
    {
        using var scope = NewDisposeScope();
        var perPrompt = prompts.Select(p => A1111Chunks(tokenizer, p)).ToList();
        int chunks = perPrompt.Max(c => c.Count);
        var ids = new long[prompts.Count * chunks * ChunkLength];
        for (int row = 0; row < prompts.Count; row++)
        {
            for (int c = 0; c < chunks; c++)
            {
                var chunk = c < perPrompt[row].Count ? perPrompt[row][c] : EmptyChunk(tokenizer);
                chunk.CopyTo(ids, (row * chunks + c) * ChunkLength);
            }
        }

        var idTensor = tensor(ids, [prompts.Count * chunks, ChunkLength], int64);
        var hidden = textEncoder.Conditioning(idTensor.to(textEncoder.Spec.Device), clipSkip);
        return hidden.reshape(prompts.Count, chunks * ChunkLength, hidden.shape[^1]).MoveToOuterDisposeScope();
    }

    /// <summary>The id of a lone comma (CLIP's <c>,&lt;/w&gt;</c>), or null when the vocabulary encodes it otherwise.</summary>
    private static int? CommaId(ClipTokenizer tokenizer)
    {
        var ids = tokenizer.Tokenize(",");
        return ids.Count == 1 ? ids[0] : null;
    }
}
