using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace StableLora.Configuration;

/// <summary>
/// The part of TOML that sd-scripts' dataset configs use, read into JSON nodes so that one reader serves TOML and JSON
/// files: comments, <c>key = value</c> with bare, quoted and dotted keys, <c>[table]</c> and <c>[[array.of.tables]]</c>
/// headers, basic and literal strings (one line), integers, floats (with <c>inf</c> and <c>nan</c>), booleans, arrays
/// (over several lines too) and inline tables. Anything else (multi-line strings, dates) is an error naming the line.
/// </summary>
internal static class MiniToml
{
    public static JsonObject Parse(string text, string source)
    {
        var root = new JsonObject();
        var current = root;
        var reader = new Reader(text, source);
        var defined = new HashSet<string>(StringComparer.Ordinal);
        while (reader.SkipBlankLines())
        {
            if (reader.Peek() == '[')
            {
                bool array = reader.Peek(1) == '[';
                reader.Advance(array ? 2 : 1);
                var path = reader.ReadKeyPath();
                reader.Expect(']');
                if (array)
                    reader.Expect(']');
                reader.EndOfLine();
                current = array ? AppendTable(root, path, reader) : DefineTable(root, path, reader, defined);
                continue;
            }

            var keys = reader.ReadKeyPath();
            reader.Expect('=');
            var value = reader.ReadValue();
            reader.EndOfLine();
            Assign(current, keys, value, reader);
        }

        return root;
    }

    private static JsonObject DefineTable(JsonObject root, List<string> path, Reader reader, HashSet<string> defined)
    {
        string name = string.Join(".", path);
        if (!defined.Add(name))
            throw reader.Error($"the table [{name}] is defined twice");
        return Descend(root, path, reader);
    }

    private static JsonObject AppendTable(JsonObject root, List<string> path, Reader reader)
    {
        var parent = Descend(root, path.Take(path.Count - 1).ToList(), reader);
        string last = path[^1];
        if (parent[last] is null)
            parent[last] = new JsonArray();
        if (parent[last] is not JsonArray array)
            throw reader.Error($"'{string.Join(".", path)}' is not an array of tables");
        var table = new JsonObject();
        array.Add(table);
        return table;
    }

    /// <summary>The table at <paramref name="path"/>, created as needed; through an array of tables, its last table.</summary>
    private static JsonObject Descend(JsonObject root, List<string> path, Reader reader)
    {
        var node = root;
        foreach (string key in path)
        {
            switch (node[key])
            {
                case null:
                    var created = new JsonObject();
                    node[key] = created;
                    node = created;
                    break;
                case JsonObject table:
                    node = table;
                    break;
                case JsonArray { Count: > 0 } array when array[^1] is JsonObject last:
                    node = last;
                    break;
                default:
                    throw reader.Error($"'{key}' is a value, not a table");
            }
        }

        return node;
    }

    private static void Assign(JsonObject table, List<string> keys, JsonNode? value, Reader reader)
    {
        var parent = Descend(table, keys.Take(keys.Count - 1).ToList(), reader);
        if (parent.ContainsKey(keys[^1]))
            throw reader.Error($"the key '{string.Join(".", keys)}' is given twice");
        parent[keys[^1]] = value;
    }

    private sealed class Reader(string text, string source)
    {
        private int _position;

        private int Line => text.Take(Math.Min(_position, text.Length)).Count(c => c == '\n') + 1;

        public char Peek(int offset = 0) => _position + offset < text.Length ? text[_position + offset] : '\0';

        public void Advance(int count = 1) => _position += count;

        public InvalidDataException Error(string message) => new($"{source}, line {Line}: {message}");

        /// <summary>Skips spaces, comments and empty lines; false at the end of the text.</summary>
        public bool SkipBlankLines()
        {
            while (_position < text.Length)
            {
                SkipSpaces();
                if (Peek() is '\n' or '\r')
                    Advance();
                else if (Peek() == '#')
                    SkipComment();
                else
                    return _position < text.Length;
            }

            return false;
        }

        public void Expect(char c)
        {
            SkipSpaces();
            if (Peek() != c)
                throw Error($"expected '{c}', found {Describe(Peek())}");
            Advance();
        }

        public void EndOfLine()
        {
            SkipSpaces();
            if (Peek() == '#')
                SkipComment();
            if (Peek() is not ('\n' or '\r' or '\0'))
                throw Error($"unexpected {Describe(Peek())} after the value");
        }

        public List<string> ReadKeyPath()
        {
            var keys = new List<string>();
            do
            {
                SkipSpaces();
                keys.Add(ReadKey());
                SkipSpaces();
            }
            while (Peek() == '.' && Advance1());

            return keys;
        }

        public JsonNode? ReadValue()
        {
            SkipSpaces();
            char c = Peek();
            switch (c)
            {
                case '"':
                    if (Peek(1) == '"' && Peek(2) == '"')
                        throw Error("multi-line strings are not supported");
                    return JsonValue.Create(ReadBasicString());
                case '\'':
                    if (Peek(1) == '\'' && Peek(2) == '\'')
                        throw Error("multi-line strings are not supported");
                    return JsonValue.Create(ReadLiteralString());
                case '[':
                    return ReadArray();
                case '{':
                    return ReadInlineTable();
            }

            int start = _position;
            while (_position < text.Length && !(Peek() is ',' or ']' or '}' or '#' or '\n' or '\r' || char.IsWhiteSpace(Peek())))
                Advance();
            string word = text[start.._position];
            switch (word)
            {
                case "true":
                    return JsonValue.Create(true);
                case "false":
                    return JsonValue.Create(false);
                case "inf" or "+inf":
                    return JsonValue.Create(double.PositiveInfinity);
                case "-inf":
                    return JsonValue.Create(double.NegativeInfinity);
            }

            string digits = word.Replace("_", "", StringComparison.Ordinal);
            if (long.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long integer))
                return JsonValue.Create(integer);
            if (digits.Length > 0 && (char.IsDigit(digits[^1]) || digits[^1] == '.') && double.TryParse(digits, NumberStyles.Float, CultureInfo.InvariantCulture, out double number))
                return JsonValue.Create(number);
            throw Error(word.Length == 0 ? $"expected a value, found {Describe(c)}" : $"'{word}' is not a value StableLora reads (a string needs quotes)");
        }

        private bool Advance1()
        {
            Advance();
            return true;
        }

        private JsonArray ReadArray()
        {
            Advance();
            var array = new JsonArray();
            while (true)
            {
                SkipBlankLines();
                if (Peek() == ']')
                {
                    Advance();
                    return array;
                }

                array.Add(ReadValue());
                SkipBlankLines();
                if (Peek() == ',')
                {
                    Advance();
                    continue;
                }

                if (Peek() != ']')
                    throw Error($"expected ',' or ']' in an array, found {Describe(Peek())}");
            }
        }

        private JsonObject ReadInlineTable()
        {
            Advance();
            var table = new JsonObject();
            SkipSpaces();
            if (Peek() == '}')
            {
                Advance();
                return table;
            }

            while (true)
            {
                var keys = ReadKeyPath();
                Expect('=');
                Assign(table, keys, ReadValue(), this);
                SkipSpaces();
                if (Peek() == '}')
                {
                    Advance();
                    return table;
                }

                Expect(',');
            }
        }

        private string ReadKey()
        {
            if (Peek() == '"')
                return ReadBasicString();
            if (Peek() == '\'')
                return ReadLiteralString();
            int start = _position;
            while (char.IsAsciiLetterOrDigit(Peek()) || Peek() is '_' or '-')
                Advance();
            if (start == _position)
                throw Error($"expected a key, found {Describe(Peek())}");
            return text[start.._position];
        }

        private string ReadBasicString()
        {
            Advance();
            var value = new StringBuilder();
            while (true)
            {
                char c = Peek();
                if (c is '\0' or '\n' or '\r')
                    throw Error("a string is not closed on its line");
                Advance();
                if (c == '"')
                    return value.ToString();
                if (c != '\\')
                {
                    value.Append(c);
                    continue;
                }

                char escape = Peek();
                Advance();
                switch (escape)
                {
                    case 'b': value.Append('\b'); break;
                    case 't': value.Append('\t'); break;
                    case 'n': value.Append('\n'); break;
                    case 'f': value.Append('\f'); break;
                    case 'r': value.Append('\r'); break;
                    case '"': value.Append('"'); break;
                    case '\\': value.Append('\\'); break;
                    case 'u' or 'U':
                        int length = escape == 'u' ? 4 : 8;
                        if (_position + length > text.Length || !int.TryParse(text.AsSpan(_position, length), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int code))
                            throw Error($"a \\{escape} escape needs {length} hexadecimal digits");
                        value.Append(char.ConvertFromUtf32(code));
                        Advance(length);
                        break;
                    default:
                        throw Error($"unknown escape \\{escape} (a Windows path needs single quotes or doubled backslashes)");
                }
            }
        }

        private string ReadLiteralString()
        {
            Advance();
            int start = _position;
            while (Peek() != '\'')
            {
                if (Peek() is '\0' or '\n' or '\r')
                    throw Error("a string is not closed on its line");
                Advance();
            }

            string value = text[start.._position];
            Advance();
            return value;
        }

        private void SkipSpaces()
        {
            while (Peek() is ' ' or '\t')
                Advance();
        }

        private void SkipComment()
        {
            while (Peek() is not ('\n' or '\0'))
                Advance();
        }

        private static string Describe(char c) => c == '\0' ? "the end of the file" : c is '\n' or '\r' ? "the end of the line" : $"'{c}'";
    }
}
