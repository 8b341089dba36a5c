using System.Globalization;
using System.Text.Json;

namespace StableLora.Configuration;

/// <summary>
/// Typed access to a diffusers/transformers <c>config.json</c> or <c>scheduler_config.json</c>: the one reader of model
/// configs. Missing keys and JSON nulls take the default the reference code uses (or null, from the nullable reads); a
/// value of the wrong type, or one the port does not implement, is a <see cref="ModelConfigException"/> naming the file,
/// key and value. Python's bare <c>NaN</c> and <c>Infinity</c> literals are accepted as numbers.
/// </summary>
internal sealed class ConfigReader
{
    private readonly JsonElement _root;

    private ConfigReader(string source, JsonElement root)
    {
        Source = source;
        _root = root;
    }

    /// <summary>The file (or description) the config came from.</summary>
    public string Source { get; }

    /// <param name="path">The config file.</param>
    /// <param name="what">What the file is, for messages ("config", "scheduler config").</param>
    public static ConfigReader FromFile(string path, string what = "config")
    {
        if (!File.Exists(path))
            throw new InvalidModelFileException(path, null, $"the {what} file does not exist");
        try
        {
            return FromJson(File.ReadAllText(path), path, what);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidModelFileException(path, null, $"cannot read the {what}: {e.Message}", e);
        }
    }

    public static ConfigReader FromJson(string json, string source, string what = "config")
    {
        try
        {
            using var document = JsonDocument.Parse(PythonJson.QuoteNonFiniteLiterals(json),
                new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(source, null, $"the {what} is not a JSON object");
            return new ConfigReader(source, document.RootElement.Clone());
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(source, null, $"the {what} is not valid JSON: {e.Message}", e);
        }
    }

    public bool Has(string key) => _root.TryGetProperty(key, out var value) && value.ValueKind != JsonValueKind.Null;

    public string? RawText(string key) => _root.TryGetProperty(key, out var value) ? value.GetRawText() : null;

    public int Int(string key, int fallback) => TryGet(key, out var value) ? ReadInt(key, value) : fallback;

    public int? NullableInt(string key) => TryGet(key, out var value) ? ReadInt(key, value) : null;

    public double Double(string key, double fallback) => TryGet(key, out var value) ? ReadDouble(key, value) : fallback;

    public double? NullableDouble(string key) => TryGet(key, out var value) ? ReadDouble(key, value) : null;

    public bool? NullableBool(string key) => Has(key) ? Bool(key, false) : null;

    public string? NullableString(string key) => String(key, null);

    public IReadOnlyList<double>? NullableDoubleList(string key)
    {
        if (!TryGet(key, out var value))
            return null;
        if (value.ValueKind != JsonValueKind.Array)
            throw Invalid(key, "expected a list of numbers");
        return value.EnumerateArray().Select(v => ReadDouble(key, v)).ToArray();
    }

    public bool Bool(string key, bool fallback)
    {
        if (!TryGet(key, out var value))
            return fallback;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Invalid(key, "expected true or false"),
        };
    }

    public string? String(string key, string? fallback)
    {
        if (!TryGet(key, out var value))
            return fallback;
        return value.ValueKind == JsonValueKind.String ? value.GetString() : throw Invalid(key, "expected a string");
    }

    public string[] StringList(string key, string[] fallback)
    {
        if (!TryGet(key, out var value))
            return fallback;
        if (value.ValueKind != JsonValueKind.Array)
            throw Invalid(key, "expected a list of strings");
        return value.EnumerateArray().Select(v => v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Invalid(key, "expected a list of strings")).ToArray();
    }

    public int[] IntList(string key, int[] fallback)
    {
        if (!TryGet(key, out var value))
            return fallback;
        if (value.ValueKind != JsonValueKind.Array)
            throw Invalid(key, "expected a list of integers");
        return value.EnumerateArray().Select(v => ReadInt(key, v)).ToArray();
    }

    /// <summary>An int or a per-block list of ints (diffusers accepts both), expanded to <paramref name="count"/> entries.</summary>
    public int[]? IntOrIntList(string key, int count)
    {
        if (!TryGet(key, out var value))
            return null;
        if (value.ValueKind == JsonValueKind.Array)
        {
            var list = value.EnumerateArray().Select(v => ReadInt(key, v)).ToArray();
            if (list.Length != count)
                throw Invalid(key, $"expected {count} entries, one per block");
            return list;
        }

        return Enumerable.Repeat(ReadInt(key, value), count).ToArray();
    }

    /// <summary>Fails unless the key is absent, null or equal to the only value this port implements.</summary>
    public void RequireDefault(string key, object? implemented, string why)
    {
        if (!TryGet(key, out var value))
            return;
        bool matches = implemented switch
        {
            null => false,
            bool b => value.ValueKind == (b ? JsonValueKind.True : JsonValueKind.False),
            string s => value.ValueKind == JsonValueKind.String && value.GetString() == s,
            int i => value.ValueKind == JsonValueKind.Number && value.TryGetDouble(out double d) && d == i,
            double x => value.ValueKind == JsonValueKind.Number && value.GetDouble() == x,
            _ => false,
        };
        if (!matches)
            throw new ModelConfigException(Source, key, value.GetRawText(), why);
    }

    public ModelConfigException Invalid(string key, string message) => new(Source, key, RawText(key), message);

    private bool TryGet(string key, out JsonElement value) =>
        _root.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

    private int ReadInt(string key, JsonElement value)
    {
        if (value.ValueKind == JsonValueKind.Number && value.TryGetDouble(out double d) && d == Math.Floor(d) && d is >= int.MinValue and <= int.MaxValue)
            return (int)d;
        throw new ModelConfigException(Source, key, value.GetRawText(), "expected an integer");
    }

    private double ReadDouble(string key, JsonElement value)
    {
        if (value.ValueKind == JsonValueKind.Number)
            return value.GetDouble();
        if (value.ValueKind == JsonValueKind.String && double.TryParse(value.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out double parsed))
            return parsed;
        if (value.ValueKind == JsonValueKind.String && PythonJson.TryParseNonFinite(value.GetString(), out double special))
            return special;
        throw new ModelConfigException(Source, key, value.GetRawText(), "expected a number");
    }
}
