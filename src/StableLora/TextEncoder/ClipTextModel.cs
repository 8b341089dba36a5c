using TorchSharp;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.TextEncoder;

/// <summary>
/// transformers' <c>CLIPTextModel</c>: token + position embeddings, pre-LayerNorm transformer layers with a causal mask,
/// and a final LayerNorm. SD conditions on <see cref="ClipTextOutput.LastHiddenState"/>. The pipeline passes no
/// attention mask, so padding tokens are attended like any other (as diffusers does).
/// </summary>
internal sealed class ClipTextModel : nn.Module
{
    private readonly ClipTextTransformer text_model;

    public ClipTextModel(ClipTextConfig config, TensorSpec spec) : base("CLIPTextModel")
    {
        Config = config;
        Spec = spec;
        text_model = new ClipTextTransformer(config, spec);
        RegisterComponents();
    }

    public ClipTextConfig Config { get; }

    public TensorSpec Spec { get; }

    /// <summary>The state-dict key of the position-id buffer, which files may or may not contain.</summary>
    public const string PositionIdsKey = "text_model.embeddings.position_ids";

    public ClipTextOutput Forward(Tensor inputIds, bool outputHiddenStates = false) => text_model.Forward(inputIds, outputHiddenStates);

    /// <summary>
    /// The conditioning with CLIP skip, numbered as kohya's <c>clip_skip</c> and AUTOMATIC1111's "Clip skip": 1 is the last
    /// layer's output (<see cref="ClipTextOutput.LastHiddenState"/>, unchanged); k &gt; 1 is transformers'
    /// <c>hidden_states[-k]</c> (the output of layer <c>layers - k + 1</c>) through the final LayerNorm. The layers after it
    /// are not run, which gives the same numbers as running them and picking the hidden state.
    /// </summary>
    /// <param name="inputIds">[B, tokens] token ids.</param>
    /// <param name="clipSkip">1 to <see cref="ClipTextConfig.NumHiddenLayers"/>.</param>
    /// <returns>[B, tokens, hidden].</returns>
    public Tensor Conditioning(Tensor inputIds, int clipSkip)
    {
        if (clipSkip < 1 || clipSkip > Config.NumHiddenLayers)
            throw new ArgumentOutOfRangeException(nameof(clipSkip), clipSkip, $"must be between 1 and {Config.NumHiddenLayers} (the text encoder's layers)");
        return clipSkip == 1 ? Forward(inputIds).LastHiddenState : text_model.ForwardLayers(inputIds, Config.NumHiddenLayers - clipSkip + 1);
    }
}

/// <summary>What the text encoder returns.</summary>
/// <param name="LastHiddenState">[B, tokens, hidden] after the final LayerNorm.</param>
/// <param name="PooledOutput">[B, hidden]: the last hidden state at each sequence's first end-of-text token.</param>
/// <param name="HiddenStates">When asked for: the embeddings, then each layer's output (before the final LayerNorm).</param>
internal sealed record ClipTextOutput(Tensor LastHiddenState, Tensor PooledOutput, IReadOnlyList<Tensor>? HiddenStates);

internal sealed class ClipTextTransformer : nn.Module
{
    private readonly ClipTextEmbeddings embeddings;
    private readonly ClipEncoder encoder;
    private readonly LayerNorm final_layer_norm;
    private readonly int _eosTokenId;

    public ClipTextTransformer(ClipTextConfig config, TensorSpec spec) : base("CLIPTextTransformer")
    {
        embeddings = new ClipTextEmbeddings(config, spec);
        encoder = new ClipEncoder(config, spec);
        final_layer_norm = new LayerNorm(config.HiddenSize, config.LayerNormEps, spec);
        _eosTokenId = config.EosTokenId;
        RegisterComponents();
    }

    public ClipTextOutput Forward(Tensor inputIds, bool outputHiddenStates)
    {
        var hidden = embeddings.Forward(inputIds);
        var hiddenStates = outputHiddenStates ? new List<Tensor> { hidden } : null;
        hidden = encoder.Forward(hidden, hiddenStates);
        var last = final_layer_norm.forward(hidden);
        using var eos = ((long)_eosTokenId).ToScalar();
        var eosPositions = inputIds.eq(eos).to(int32).argmax(-1);
        var pooled = last[TensorMath.Arange(last.shape[0], int64, last.device), eosPositions.to(last.device)];
        return new ClipTextOutput(last, pooled, hiddenStates);
    }

    /// <summary>The first <paramref name="layerCount"/> layers' output through the final LayerNorm (no pooled output).</summary>
    public Tensor ForwardLayers(Tensor inputIds, int layerCount)
    {
        var hidden = encoder.Forward(embeddings.Forward(inputIds), null, layerCount);
        return final_layer_norm.forward(hidden);
    }
}

internal sealed class ClipTextEmbeddings : nn.Module
{
    private readonly Tensor position_ids;
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;

    public ClipTextEmbeddings(ClipTextConfig config, TensorSpec spec) : base("CLIPTextEmbeddings")
    {
        position_ids = TensorMath.Arange(config.MaxPositionEmbeddings, int64, spec.Device).unsqueeze(0);
        token_embedding = new Embedding(config.VocabSize, config.HiddenSize, spec);
        position_embedding = new Embedding(config.MaxPositionEmbeddings, config.HiddenSize, spec);
        RegisterComponents();
    }

    public Tensor Forward(Tensor inputIds)
    {
        long length = inputIds.shape[^1];
        var positions = position_ids.narrow(1, 0, length).to(inputIds.device);
        return token_embedding.forward(inputIds).Plus(position_embedding.forward(positions));
    }
}

internal sealed class ClipEncoder : nn.Module
{
    private readonly TorchSharp.Modules.ModuleList<ClipEncoderLayer> layers;

    public ClipEncoder(ClipTextConfig config, TensorSpec spec) : base("CLIPEncoder")
    {
        layers = new TorchSharp.Modules.ModuleList<ClipEncoderLayer>(
            Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new ClipEncoderLayer(config, spec)).ToArray());
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates, List<Tensor>? collect, int? layerCount = null)
    {
        var hidden = hiddenStates;
        foreach (var layer in layers.Take(layerCount ?? layers.Count))
        {
            hidden = layer.Forward(hidden);
            collect?.Add(hidden);
        }

        return hidden;
    }
}

internal sealed class ClipEncoderLayer : nn.Module
{
    private readonly ClipAttention self_attn;
    private readonly LayerNorm layer_norm1;
    private readonly ClipMlp mlp;
    private readonly LayerNorm layer_norm2;

    public ClipEncoderLayer(ClipTextConfig config, TensorSpec spec) : base("CLIPEncoderLayer")
    {
        self_attn = new ClipAttention(config, spec);
        layer_norm1 = new LayerNorm(config.HiddenSize, config.LayerNormEps, spec);
        mlp = new ClipMlp(config, spec);
        layer_norm2 = new LayerNorm(config.HiddenSize, config.LayerNormEps, spec);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates)
    {
        var hidden = hiddenStates.Plus(self_attn.Forward(layer_norm1.forward(hiddenStates)));
        return hidden.Plus(mlp.Forward(layer_norm2.forward(hidden)));
    }
}

/// <summary>CLIP's causal multi-head self-attention (<c>k_proj</c>, <c>v_proj</c>, <c>q_proj</c>, <c>out_proj</c>, all with bias).</summary>
internal sealed class ClipAttention : nn.Module
{
    private readonly Linear k_proj;
    private readonly Linear v_proj;
    private readonly Linear q_proj;
    private readonly Linear out_proj;
    private readonly long _heads;
    private readonly long _headDim;

    public ClipAttention(ClipTextConfig config, TensorSpec spec) : base("CLIPAttention")
    {
        long dim = config.HiddenSize;
        k_proj = new Linear(dim, dim, hasBias: true, spec);
        v_proj = new Linear(dim, dim, hasBias: true, spec);
        q_proj = new Linear(dim, dim, hasBias: true, spec);
        out_proj = new Linear(dim, dim, hasBias: true, spec);
        _heads = config.NumAttentionHeads;
        _headDim = dim / _heads;
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates)
    {
        long batch = hiddenStates.shape[0], tokens = hiddenStates.shape[1];
        Tensor Heads(Tensor projected) => projected.view(batch, tokens, _heads, _headDim).transpose(1, 2);
        var attended = nn.functional.scaled_dot_product_attention(
            Heads(q_proj.forward(hiddenStates)), Heads(k_proj.forward(hiddenStates)), Heads(v_proj.forward(hiddenStates)), is_casual: true);
        return out_proj.forward(attended.transpose(1, 2).reshape(batch, tokens, _heads * _headDim));
    }
}

internal sealed class ClipMlp : nn.Module
{
    private readonly Linear fc1;
    private readonly Linear fc2;
    private readonly Func<Tensor, Tensor> _activation;

    public ClipMlp(ClipTextConfig config, TensorSpec spec) : base("CLIPMLP")
    {
        fc1 = new Linear(config.HiddenSize, config.IntermediateSize, hasBias: true, spec);
        fc2 = new Linear(config.IntermediateSize, config.HiddenSize, hasBias: true, spec);
        _activation = Activations.Get(config.HiddenAct);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hiddenStates) => fc2.forward(_activation(fc1.forward(hiddenStates)));
}
