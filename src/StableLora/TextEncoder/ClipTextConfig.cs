using StableLora.Configuration;

namespace StableLora.TextEncoder;

/// <summary>The configuration of transformers' <c>CLIPTextModel</c> (<c>text_encoder/config.json</c>), with transformers' defaults.</summary>
internal sealed record ClipTextConfig
{
    public int VocabSize { get; init; } = 49408;
    public int HiddenSize { get; init; } = 512;
    public int IntermediateSize { get; init; } = 2048;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 8;
    public int MaxPositionEmbeddings { get; init; } = 77;
    public string HiddenAct { get; init; } = "quick_gelu";
    public double LayerNormEps { get; init; } = 1e-5;
    public int EosTokenId { get; init; } = 49407;

    public static ClipTextConfig FromFile(string path) => FromReader(ConfigReader.FromFile(path));

    public static ClipTextConfig FromJson(string json, string source) => FromReader(ConfigReader.FromJson(json, source));

    public static ClipTextConfig FromReader(ConfigReader config)
    {
        string act = config.String("hidden_act", "quick_gelu")!;
        if (act is not ("quick_gelu" or "gelu"))
            throw config.Invalid("hidden_act", "expected quick_gelu (SD 1.x) or gelu (SD 2.x)");
        var result = new ClipTextConfig
        {
            VocabSize = config.Int("vocab_size", 49408),
            HiddenSize = config.Int("hidden_size", 512),
            IntermediateSize = config.Int("intermediate_size", 2048),
            NumHiddenLayers = config.Int("num_hidden_layers", 12),
            NumAttentionHeads = config.Int("num_attention_heads", 8),
            MaxPositionEmbeddings = config.Int("max_position_embeddings", 77),
            HiddenAct = act,
            LayerNormEps = config.Double("layer_norm_eps", 1e-5),
            EosTokenId = config.Int("eos_token_id", 49407),
        };
        if (result.HiddenSize <= 0 || result.NumAttentionHeads <= 0 || result.HiddenSize % result.NumAttentionHeads != 0)
            throw config.Invalid("num_attention_heads", $"hidden_size {result.HiddenSize} cannot be split into that many heads");
        if (result.NumHiddenLayers < 1)
            throw config.Invalid("num_hidden_layers", "expected at least one layer");
        return result;
    }
}
