using System.Text;

namespace StableLora.Configuration;

/// <summary>Python's <c>json</c> module writes NaN and ±infinity as bare literals, which strict JSON parsers refuse.</summary>
internal static class PythonJson
{
    private static readonly string[] NonFiniteLiterals = ["-Infinity", "Infinity", "NaN"];

    /// <summary>Turns bare <c>NaN</c>, <c>Infinity</c> and <c>-Infinity</c> tokens (outside strings) into strings.</summary>
    public static string QuoteNonFiniteLiterals(string json)
    {
        StringBuilder? builder = null;
        bool inString = false;
        for (int i = 0; i < json.Length; i++)
        {
            char c = json[i];
            if (inString)
            {
                if (c == '\\')
                {
                    builder?.Append(c);
                    i++;
                    if (i < json.Length)
                        builder?.Append(json[i]);
                    continue;
                }
                if (c == '"')
                    inString = false;
                builder?.Append(c);
                continue;
            }
            if (c == '"')
            {
                inString = true;
                builder?.Append(c);
                continue;
            }
            string? literal = NonFiniteLiterals.FirstOrDefault(l => string.CompareOrdinal(json, i, l, 0, l.Length) == 0);
            if (literal is not null)
            {
                builder ??= new StringBuilder(json, 0, i, json.Length + 16);
                builder.Append('"').Append(literal).Append('"');
                i += literal.Length - 1;
                continue;
            }
            builder?.Append(c);
        }
        return builder?.ToString() ?? json;
    }

    public static bool TryParseNonFinite(string? text, out double value)
    {
        value = text switch
        {
            "-Infinity" => double.NegativeInfinity,
            "Infinity" => double.PositiveInfinity,
            "NaN" => double.NaN,
            _ => 0,
        };
        return text is "-Infinity" or "Infinity" or "NaN";
    }
}
