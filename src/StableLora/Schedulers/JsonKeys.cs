using System.Text.Json;

namespace StableLora.Schedulers;

/// <summary>Typed, nullable reads of the top-level keys of a config object; a wrong type names the key and value.</summary>
internal readonly struct JsonKeys
{
    private readonly JsonElement _root;
    private readonly string _source;

    public JsonKeys(JsonElement root, string source)
    {
        _root = root;
        _source = source;
    }

    public string? String(string key)
    {
        if (!TryGet(key, out var value))
            return null;
        return value.ValueKind == JsonValueKind.String ? value.GetString() : throw Invalid(key, value, "expected a string");
    }

    public bool? Bool(string key)
    {
        if (!TryGet(key, out var value))
            return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Invalid(key, value, "expected true or false"),
        };
    }

    public int? Int(string key)
    {
        if (!TryGet(key, out var value))
            return null;
        if (value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int number))
            return number;
        if (value.ValueKind == JsonValueKind.Number && value.TryGetDouble(out double real) && real == Math.Floor(real) && Math.Abs(real) <= int.MaxValue)
            return (int)real;
        throw Invalid(key, value, "expected an integer");
    }

    public double? Double(string key) => TryGet(key, out var value) ? ReadDouble(key, value) : null;

    public IReadOnlyList<double>? DoubleList(string key)
    {
        if (!TryGet(key, out var value))
            return null;
        if (value.ValueKind != JsonValueKind.Array)
            throw Invalid(key, value, "expected a list of numbers");
        var result = new List<double>(value.GetArrayLength());
        foreach (var item in value.EnumerateArray())
            result.Add(ReadDouble(key, item));
        return result;
    }

    private double ReadDouble(string key, JsonElement value)
    {
        if (value.ValueKind == JsonValueKind.Number)
            return value.GetDouble();
        if (value.ValueKind == JsonValueKind.String && PythonJson.TryParseNonFinite(value.GetString(), out double special))
            return special;
        throw Invalid(key, value, "expected a number");
    }

    private bool TryGet(string key, out JsonElement value) =>
        _root.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

    private ModelConfigException Invalid(string key, JsonElement value, string message) =>
        new(_source, key, value.GetRawText(), message);
}
