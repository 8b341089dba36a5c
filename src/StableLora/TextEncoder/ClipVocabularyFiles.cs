using System.Text.Json;

namespace StableLora.TextEncoder;

/// <summary>Reads the files of a CLIP tokenizer folder as the reference does, naming the file at fault on errors.</summary>
internal static class ClipVocabularyFiles
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";
    public const string ConfigFileName = "tokenizer_config.json";

    // The reference reads at most this many merges: CLIP's 49152-token BPE vocabulary less the 256 byte symbols and
    // the 2 special tokens.
    private const int MaxMerges = 49152 - 256 - 2;

    public static Dictionary<string, int> ReadVocabulary(string path) => ParseVocabulary(ReadText(path), path);

    /// <summary>Parses the text of a <c>vocab.json</c>; <paramref name="path"/> names it in errors.</summary>
    public static Dictionary<string, int> ParseVocabulary(string text, string path)
    {
        using JsonDocument document = ParseJson(text, path);
        if (document.RootElement.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(path, null, "expected a JSON object mapping each token to its id.");
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty entry in document.RootElement.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new InvalidModelFileException(path, entry.Name, "the token id is not a non-negative integer.");
            vocabulary[entry.Name] = id;
        }

        return vocabulary;
    }

    /// <summary>The merges as "left right" strings: the lines after the "#version" header, at most <see cref="MaxMerges"/>.</summary>
    public static List<string> ReadMerges(string path) => ParseMerges(ReadText(path), path);

    /// <summary>Parses the text of a <c>merges.txt</c>; <paramref name="path"/> names it in errors.</summary>
    public static List<string> ParseMerges(string text, string path)
    {
        string[] lines = text.Trim().Split('\n');
        var merges = new List<string>();
        for (int line = 1; line < lines.Length && line <= MaxMerges; line++)
        {
            string[] parts = lines[line].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0)
                continue;
            if (parts.Length != 2)
                throw new InvalidModelFileException(path, $"line {line + 1}", "expected two symbols separated by a space.");
            merges.Add(parts[0] + " " + parts[1]);
        }

        return merges;
    }

    /// <summary>
    /// The model_max_length of tokenizer_config.json (the default when the file or the key is absent), after checking
    /// that the special tokens it names are CLIP's.
    /// </summary>
    public static int ReadTokenizerConfig(string path, int defaultMaxLength)
    {
        if (!File.Exists(path))
            return defaultMaxLength;
        using JsonDocument document = ParseJson(ReadText(path), path);
        JsonElement root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(path, null, "expected a JSON object.");
        RequireToken(path, root, "bos_token", ClipTokenizer.StartOfTextToken);
        RequireToken(path, root, "eos_token", ClipTokenizer.EndOfTextToken);
        RequireToken(path, root, "pad_token", ClipTokenizer.EndOfTextToken);
        RequireToken(path, root, "unk_token", ClipTokenizer.EndOfTextToken);
        if (!root.TryGetProperty("model_max_length", out JsonElement maxLength) || maxLength.ValueKind == JsonValueKind.Null)
            return defaultMaxLength;
        if (maxLength.ValueKind != JsonValueKind.Number || !maxLength.TryGetInt32(out int value) || value < 2)
            throw new ModelConfigException(path, "model_max_length", maxLength.GetRawText(), "expected an integer of at least 2.");
        return value;
    }

    // The special tokens are fixed by this implementation; a config naming others (SD 2.x pads with "!") is refused
    // rather than silently encoded differently from the reference.
    private static void RequireToken(string path, JsonElement root, string key, string expected)
    {
        if (!root.TryGetProperty(key, out JsonElement value) || value.ValueKind == JsonValueKind.Null)
            return;
        string? content = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out JsonElement c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => null,
        };
        if (content != expected)
            throw new ModelConfigException(path, key, value.GetRawText(), $"only the CLIP token \"{expected}\" is supported here.");
    }

    private static JsonDocument ParseJson(string text, string path)
    {
        try
        {
            return JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, null, $"not valid JSON: {e.Message}", e);
        }
    }

    private static string ReadText(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string reason = e is FileNotFoundException or DirectoryNotFoundException ? "file not found." : $"cannot be read: {e.Message}";
            throw new InvalidModelFileException(path, null, reason, e);
        }
    }
}
