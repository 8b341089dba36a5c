using System.Globalization;
using System.Text;

namespace StableLora.Configuration;

/// <summary>A plain YAML scalar as written (quotes removed), with YAML 1.1's readings of numbers, booleans and null.</summary>
internal sealed record YamlScalar(string Text, bool Quoted)
{
    public bool IsNull => !Quoted && Text is "" or "~" or "null" or "Null" or "NULL";

    public bool TryGetLong(out long value) =>
        long.TryParse(Quoted ? "" : Text.Replace("_", "", StringComparison.Ordinal), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value);

    public bool TryGetDouble(out double value)
    {
        value = 0;
        if (Quoted)
            return false;
        string text = Text.Replace("_", "", StringComparison.Ordinal);
        switch (text.ToLowerInvariant())
        {
            case ".inf" or "+.inf":
                value = double.PositiveInfinity;
                return true;
            case "-.inf":
                value = double.NegativeInfinity;
                return true;
            case ".nan":
                value = double.NaN;
                return true;
        }

        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value);
    }

    public bool TryGetBool(out bool value)
    {
        value = false;
        if (Quoted)
            return false;
        switch (Text.ToLowerInvariant())
        {
            case "true" or "yes" or "on":
                value = true;
                return true;
            case "false" or "no" or "off":
                return true;
            default:
                return false;
        }
    }

    public override string ToString() => Text;
}

/// <summary>
/// A reader for the YAML that LDM/CompVis configs (<c>v1-inference.yaml</c> and its relatives) are written in: block
/// mappings and sequences by indentation, flow sequences and mappings (<c>[ 4, 2, 1 ]</c>, <c>{}</c>), plain and quoted
/// scalars, comments and literal/folded blocks. Mappings become <see cref="Dictionary{TKey,TValue}"/> of string to
/// node, sequences <see cref="List{T}"/> of nodes, scalars <see cref="YamlScalar"/>. Anchors, aliases, tags and
/// multi-document streams are refused with the line named: StableLora reads only these configs, not YAML at large.
/// </summary>
internal sealed class MiniYaml
{
    private readonly string _source;
    private readonly List<Line> _lines;
    private int _next;

    private MiniYaml(string source, List<Line> lines)
    {
        _source = source;
        _lines = lines;
    }

    public static object? Parse(string text, string source)
    {
        var parser = new MiniYaml(source, SplitLines(text, source));
        if (parser._lines.Count == 0)
            return null;
        object? root = parser.ParseBlock(parser._lines[0].Indent);
        if (parser._next < parser._lines.Count)
            throw parser.Error(parser._lines[parser._next], "unexpected indentation");
        return root;
    }

    private object? ParseBlock(int indent)
    {
        var line = _lines[_next];
        return line.IsSequenceItem ? ParseSequence(indent) : ParseMapping(indent);
    }

    private Dictionary<string, object?> ParseMapping(int indent)
    {
        var mapping = new Dictionary<string, object?>(StringComparer.Ordinal);
        while (_next < _lines.Count && _lines[_next].Indent == indent && !_lines[_next].IsSequenceItem)
        {
            var line = _lines[_next++];
            var (key, rest) = SplitKey(line, line.Text);
            if (!mapping.TryAdd(key, ParseValue(line, rest, indent)))
                throw Error(line, $"the key '{key}' appears twice in one mapping");
        }

        return mapping;
    }

    private List<object?> ParseSequence(int indent)
    {
        var sequence = new List<object?>();
        while (_next < _lines.Count && _lines[_next].Indent == indent && _lines[_next].IsSequenceItem)
        {
            var line = _lines[_next];
            string item = line.Text.Length > 1 ? line.Text[2..].TrimStart() : "";
            if (item.Length > 0 && FindMappingColon(item) >= 0 && item[0] is not ('[' or '{' or '"' or '\''))
            {
                // "- key: value" opens a mapping whose keys sit at the column after the dash.
                int column = indent + line.Text.Length - item.Length;
                _lines[_next] = line with { Indent = column, Text = item };
                sequence.Add(ParseMapping(column));
                continue;
            }

            _next++;
            sequence.Add(ParseValue(line, item, indent));
        }

        return sequence;
    }

    /// <summary>The value after "key:" or "-": inline, or the more indented block below (a sequence may also sit at the key's own indent).</summary>
    private object? ParseValue(Line line, string rest, int indent)
    {
        if (rest is "|" or ">" or "|-" or ">-" or "|+" or ">+")
            return ReadBlockScalar(indent, folded: rest[0] == '>');
        if (rest.Length > 0)
            return ParseInline(line, rest);
        if (_next < _lines.Count && (_lines[_next].Indent > indent || (_lines[_next].Indent == indent && _lines[_next].IsSequenceItem && !line.IsSequenceItem)))
            return ParseBlock(_lines[_next].Indent);
        return new YamlScalar("", false);
    }

    private YamlScalar ReadBlockScalar(int indent, bool folded)
    {
        var text = new StringBuilder();
        while (_next < _lines.Count && _lines[_next].Indent > indent)
        {
            if (text.Length > 0)
                text.Append(folded ? ' ' : '\n');
            text.Append(_lines[_next++].Text);
        }

        return new YamlScalar(text.ToString(), true);
    }

    private object? ParseInline(Line line, string text)
    {
        if (text[0] is '&' or '*' or '!')
            throw Error(line, "anchors, aliases and tags are not supported");
        if (text[0] is '[' or '{')
        {
            // A flow collection may continue on the following lines.
            while (!Balanced(text) && _next < _lines.Count)
                text += " " + _lines[_next++].Text;
            int position = 0;
            object? value = ParseFlow(line, text, ref position);
            SkipSpaces(text, ref position);
            if (position != text.Length)
                throw Error(line, $"unexpected text after the flow collection: '{text[position..]}'");
            return value;
        }

        return Scalar(line, text);
    }

    private object? ParseFlow(Line line, string text, ref int position)
    {
        SkipSpaces(text, ref position);
        if (position >= text.Length)
            throw Error(line, "the flow collection is not closed");
        char open = text[position];
        if (open is not ('[' or '{'))
        {
            int start = position;
            if (open is '"' or '\'')
            {
                position = ClosingQuote(line, text, position) + 1;
                return Scalar(line, text[start..position]);
            }

            while (position < text.Length && text[position] is not (',' or ']' or '}'))
                position++;
            string scalar = text[start..position].Trim();
            return Scalar(line, scalar);
        }

        position++;
        char close = open == '[' ? ']' : '}';
        var list = new List<object?>();
        var map = new Dictionary<string, object?>(StringComparer.Ordinal);
        SkipSpaces(text, ref position);
        while (position < text.Length && text[position] != close)
        {
            if (open == '[')
                list.Add(ParseFlow(line, text, ref position));
            else
            {
                int colon = text.IndexOf(':', position);
                if (colon < 0)
                    throw Error(line, "a flow mapping entry has no ':'");
                string key = Unquote(text[position..colon].Trim());
                position = colon + 1;
                map[key] = ParseFlow(line, text, ref position);
            }

            SkipSpaces(text, ref position);
            if (position < text.Length && text[position] == ',')
            {
                position++;
                SkipSpaces(text, ref position);
            }
        }

        if (position >= text.Length)
            throw Error(line, $"the flow collection is not closed with '{close}'");
        position++;
        return open == '[' ? list : map;
    }

    private YamlScalar Scalar(Line line, string text)
    {
        if (text.Length > 0 && text[0] is '"' or '\'')
        {
            if (ClosingQuote(line, text, 0) != text.Length - 1)
                throw Error(line, $"unexpected text after the quoted string: {text}");
            return new YamlScalar(Unquote(text), true);
        }

        if (text.Length > 0 && text[0] is '&' or '*' or '!')
            throw Error(line, "anchors, aliases and tags are not supported");
        return new YamlScalar(text, false);
    }

    private (string Key, string Value) SplitKey(Line line, string text)
    {
        int colon = FindMappingColon(text);
        if (colon < 0)
            throw Error(line, $"expected 'key: value', found '{text}'");
        return (Unquote(text[..colon].Trim()), text[(colon + 1)..].Trim());
    }

    /// <summary>The ':' that ends a mapping key (followed by a space or the end of the line, outside quotes), or -1.</summary>
    private static int FindMappingColon(string text)
    {
        char quote = '\0';
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (quote != '\0')
            {
                if (c == quote)
                    quote = '\0';
            }
            else if (c is '"' or '\'' && i == 0)
                quote = c;
            else if (c is '[' or '{' && i == 0)
                return -1;
            else if (c == ':' && (i + 1 == text.Length || text[i + 1] == ' '))
                return i;
        }

        return -1;
    }

    private int ClosingQuote(Line line, string text, int open)
    {
        char quote = text[open];
        for (int i = open + 1; i < text.Length; i++)
        {
            if (text[i] == quote)
            {
                if (quote == '\'' && i + 1 < text.Length && text[i + 1] == '\'')
                {
                    i++;
                    continue;
                }

                return i;
            }

            if (quote == '"' && text[i] == '\\')
                i++;
        }

        throw Error(line, "a quoted string is not closed");
    }

    private static string Unquote(string text)
    {
        if (text.Length >= 2 && text[0] == '\'' && text[^1] == '\'')
            return text[1..^1].Replace("''", "'", StringComparison.Ordinal);
        if (text.Length >= 2 && text[0] == '"' && text[^1] == '"')
            return System.Text.RegularExpressions.Regex.Unescape(text[1..^1]);
        return text;
    }

    private static bool Balanced(string text)
    {
        int depth = 0;
        char quote = '\0';
        foreach (char c in text)
        {
            if (quote != '\0')
            {
                if (c == quote)
                    quote = '\0';
                continue;
            }

            if (c is '"' or '\'')
                quote = c;
            else if (c is '[' or '{')
                depth++;
            else if (c is ']' or '}')
                depth--;
        }

        return depth <= 0;
    }

    private static void SkipSpaces(string text, ref int position)
    {
        while (position < text.Length && text[position] == ' ')
            position++;
    }

    private static List<Line> SplitLines(string text, string source)
    {
        var lines = new List<Line>();
        string[] raw = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        for (int number = 1; number <= raw.Length; number++)
        {
            string content = StripComment(raw[number - 1]).TrimEnd();
            if (content.Trim().Length == 0)
                continue;
            if (content.TrimStart().StartsWith('\t') || content.TakeWhile(c => c is ' ' or '\t').Contains('\t'))
                throw new FormatException($"{source}: line {number}: tabs are not allowed for indentation in YAML");
            if (content is "---" or "...")
            {
                if (lines.Count == 0)
                    continue;
                throw new FormatException($"{source}: line {number}: only one YAML document is supported");
            }

            int indent = content.Length - content.TrimStart(' ').Length;
            lines.Add(new Line(number, indent, content[indent..]));
        }

        return lines;
    }

    private static string StripComment(string line)
    {
        char quote = '\0';
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quote != '\0')
            {
                if (c == quote)
                    quote = '\0';
            }
            else if (c is '"' or '\'' && (i == 0 || line[i - 1] is ' ' or '[' or '{' or ',' or ':'))
                quote = c;
            else if (c == '#' && (i == 0 || line[i - 1] is ' ' or '\t'))
                return line[..i];
        }

        return line;
    }

    private FormatException Error(Line line, string message) => new($"{_source}: line {line.Number}: {message}");

    private sealed record Line(int Number, int Indent, string Text)
    {
        public bool IsSequenceItem => Text == "-" || Text.StartsWith("- ", StringComparison.Ordinal);
    }
}
