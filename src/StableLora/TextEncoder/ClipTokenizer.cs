using Microsoft.ML.Tokenizers;
using TorchSharp;

namespace StableLora.TextEncoder;

/// <summary>
/// The CLIP BPE tokenizer of Stable Diffusion 1.x, producing exactly the ids of Hugging Face transformers' (slow)
/// <c>CLIPTokenizer</c> with ftfy installed, called as the diffusers pipeline calls it
/// (<c>padding="max_length", max_length=77, truncation=True</c>).
/// </summary>
/// <remarks>
/// A prompt is first split at the literal special tokens <c>&lt;|startoftext|&gt;</c> and <c>&lt;|endoftext|&gt;</c>;
/// every other piece is cleaned like ftfy's <c>fix_text</c> (HTML entities, mojibake, ligatures, fullwidth
/// characters, curly quotes, control characters, NFC), has its whitespace collapsed, is lower-cased and split into
/// words, and each word is encoded by byte-level BPE with <c>&lt;/w&gt;</c> marking its last symbol. Instances are
/// immutable and safe to share between threads.
/// </remarks>
public sealed class ClipTokenizer
{
    /// <summary>The CLIP sequence length of Stable Diffusion 1.x.</summary>
    public const int DefaultMaxLength = 77;

    internal const string StartOfTextToken = "<|startoftext|>";
    internal const string EndOfTextToken = "<|endoftext|>";

    private static readonly string[] SpecialTokens = [StartOfTextToken, EndOfTextToken];

    private readonly BpeTokenizer _bpe;

    private ClipTokenizer(BpeTokenizer bpe, int bosTokenId, int eosTokenId, int maxLength)
    {
        _bpe = bpe;
        BosTokenId = bosTokenId;
        EosTokenId = eosTokenId;
        MaxLength = maxLength;
    }

    /// <summary>The length of every encoded sequence, start and end tokens included (77 for SD 1.x).</summary>
    public int MaxLength { get; }

    /// <summary>The id of <c>&lt;|startoftext|&gt;</c> (49406 in CLIP's vocabulary).</summary>
    public int BosTokenId { get; }

    /// <summary>The id of <c>&lt;|endoftext|&gt;</c> (49407 in CLIP's vocabulary).</summary>
    public int EosTokenId { get; }

    /// <summary>The id used for padding: <c>&lt;|endoftext|&gt;</c> again, as in the reference.</summary>
    public int PadTokenId => EosTokenId;

    /// <summary>
    /// Loads the tokenizer from a diffusers / transformers <c>tokenizer</c> folder: <c>vocab.json</c>,
    /// <c>merges.txt</c>, and <c>tokenizer_config.json</c>'s <c>model_max_length</c> when that file exists.
    /// </summary>
    /// <param name="tokenizerDirectory">The folder, e.g. <c>&lt;model&gt;/tokenizer</c>.</param>
    /// <exception cref="InvalidModelFileException">A file is missing or invalid; the exception names it.</exception>
    public static ClipTokenizer FromDirectory(string tokenizerDirectory)
    {
        ArgumentNullException.ThrowIfNull(tokenizerDirectory);
        int maxLength = ClipVocabularyFiles.ReadTokenizerConfig(
            Path.Combine(tokenizerDirectory, ClipVocabularyFiles.ConfigFileName), DefaultMaxLength);
        return FromFiles(
            Path.Combine(tokenizerDirectory, ClipVocabularyFiles.VocabFileName),
            Path.Combine(tokenizerDirectory, ClipVocabularyFiles.MergesFileName),
            maxLength);
    }

    /// <summary>Loads the tokenizer from a CLIP <c>vocab.json</c> and <c>merges.txt</c>.</summary>
    /// <param name="vocabPath">The JSON object mapping each token to its id.</param>
    /// <param name="mergesPath">The BPE merges, one "left right" pair per line after a "#version" line.</param>
    /// <param name="maxLength">The encoded sequence length, start and end tokens included (at least 2).</param>
    /// <exception cref="InvalidModelFileException">A file is missing or invalid; the exception names it.</exception>
    public static ClipTokenizer FromFiles(string vocabPath, string mergesPath, int maxLength = DefaultMaxLength)
    {
        ArgumentNullException.ThrowIfNull(vocabPath);
        ArgumentNullException.ThrowIfNull(mergesPath);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);

        return Create(ClipVocabularyFiles.ReadVocabulary(vocabPath), vocabPath, ClipVocabularyFiles.ReadMerges(mergesPath), mergesPath, maxLength);
    }

    /// <summary>Builds the tokenizer from a vocabulary and merges already read; the names are used in errors.</summary>
    internal static ClipTokenizer Create(Dictionary<string, int> vocabulary, string vocabPath, List<string> merges, string mergesPath, int maxLength = DefaultMaxLength)
    {
        foreach (string special in SpecialTokens)
        {
            if (!vocabulary.ContainsKey(special))
                throw new InvalidModelFileException(vocabPath, special, "the CLIP special token is missing from the vocabulary.");
        }

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocabulary)
            {
                Merges = merges,
                Normalizer = ClipTextNormalizer.Instance,
                PreTokenizer = ClipPreTokenizer.Instance,
                // Whole words equal to a literal map straight to its id, as the reference's seeded BPE cache does.
                SpecialTokens = SpecialTokens.ToDictionary(token => token, token => vocabulary[token]),
                ByteLevel = true,
                EndOfWordSuffix = "</w>",
                UnknownToken = EndOfTextToken,
            });
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidModelFileException(mergesPath, null, $"does not fit {vocabPath}: {e.Message}", e);
        }

        return new ClipTokenizer(bpe, vocabulary[StartOfTextToken], vocabulary[EndOfTextToken], maxLength);
    }

    /// <summary>Encodes one prompt to <see cref="MaxLength"/> ids and its attention mask, truncating if needed.</summary>
    /// <param name="prompt">The prompt text (any Unicode; an empty prompt gives start, end and padding).</param>
    public ClipTokenization Encode(string prompt)
    {
        IReadOnlyList<int> tokens = Tokenize(prompt);
        int kept = Math.Min(tokens.Count, MaxLength - 2);
        var inputIds = new long[MaxLength];
        var attentionMask = new long[MaxLength];
        inputIds[0] = BosTokenId;
        for (int i = 0; i < kept; i++)
            inputIds[1 + i] = tokens[i];
        inputIds[1 + kept] = EosTokenId;
        for (int i = kept + 2; i < MaxLength; i++)
            inputIds[i] = PadTokenId;
        Array.Fill(attentionMask, 1L, 0, kept + 2);
        return new ClipTokenization(inputIds, attentionMask, tokens.Count, kept);
    }

    /// <summary>Encodes several prompts into the int64 tensor [prompts.Count, <see cref="MaxLength"/>] of their ids.</summary>
    /// <param name="prompts">The prompts, one row each.</param>
    /// <returns>A new CPU tensor; the caller owns (and disposes) it.</returns>
    public torch.Tensor EncodeBatch(IReadOnlyList<string> prompts)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        var ids = new long[prompts.Count * MaxLength];
        for (int row = 0; row < prompts.Count; row++)
            Encode(prompts[row]).InputIds.CopyTo(ids, row * MaxLength);
        return torch.tensor(ids, [prompts.Count, MaxLength], torch.int64);
    }

    /// <summary>The prompt's token ids without start/end tokens, padding or truncation.</summary>
    /// <param name="prompt">The prompt text.</param>
    public IReadOnlyList<int> Tokenize(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var ids = new List<int>();
        foreach (string piece in SplitAtSpecialTokens(prompt))
        {
            if (piece == StartOfTextToken)
                ids.Add(BosTokenId);
            else if (piece == EndOfTextToken)
                ids.Add(EosTokenId);
            else
                ids.AddRange(_bpe.EncodeToIds(piece));
        }

        return ids;
    }

    /// <summary>
    /// The prompt cut before and after every exact occurrence of a special-token literal; empty pieces are dropped.
    /// The reference does this on the raw text, before any cleaning, and keeps the whitespace around the literals. It
    /// cannot be left to <see cref="BpeTokenizer"/>, which normalizes the whole text first: ftfy would then see the
    /// literal's '&lt;' and stop decoding HTML entities in the rest of the prompt.
    /// </summary>
    private static IEnumerable<string> SplitAtSpecialTokens(string prompt)
    {
        int start = 0;
        while (start < prompt.Length)
        {
            (int index, string? token) = FindFirstSpecialToken(prompt, start);
            if (token is null)
            {
                yield return prompt[start..];
                yield break;
            }

            if (index > start)
                yield return prompt[start..index];
            yield return token;
            start = index + token.Length;
        }
    }

    private static (int Index, string? Token) FindFirstSpecialToken(string text, int start)
    {
        (int Index, string? Token) first = (-1, null);
        foreach (string token in SpecialTokens)
        {
            int index = text.IndexOf(token, start, StringComparison.Ordinal);
            if (index >= 0 && (first.Token is null || index < first.Index))
                first = (index, token);
        }

        return first;
    }
}
