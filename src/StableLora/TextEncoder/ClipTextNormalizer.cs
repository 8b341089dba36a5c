using System.Text;
using Microsoft.ML.Tokenizers;
using StableLora.TextEncoder.Normalization;

namespace StableLora.TextEncoder;

/// <summary>
/// What the reference CLIP tokenizer does to a piece of prompt text before splitting it into words: ftfy's
/// <c>fix_text</c>, then every run of whitespace to one space with the ends stripped, then Python's lower-casing.
/// Plugged into <see cref="BpeTokenizer"/> as its normalizer.
/// </summary>
internal sealed class ClipTextNormalizer : Normalizer
{
    public static ClipTextNormalizer Instance { get; } = new();

    private ClipTextNormalizer()
    {
    }

    public override string Normalize(string original) =>
        PythonText.ToLower(CollapseWhitespace(TextFixer.FixText(original)));

    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());

    private static string CollapseWhitespace(string text)
    {
        var builder = new StringBuilder(text.Length);
        bool inWhitespace = false;
        for (int i = 0; i < text.Length; i += CodePoints.WidthAt(text, i))
        {
            int codePoint = CodePoints.At(text, i);
            if (PythonText.IsWhiteSpaceProperty(codePoint))
            {
                if (!inWhitespace)
                    builder.Append(' ');
                inWhitespace = true;
            }
            else
            {
                CodePoints.Append(builder, codePoint);
                inWhitespace = false;
            }
        }

        return StripPythonWhitespace(builder.ToString());
    }

    private static string StripPythonWhitespace(string text)
    {
        int start = 0, end = text.Length;
        while (start < end && PythonText.IsSpace(text[start]))
            start++;
        while (end > start && PythonText.IsSpace(text[end - 1]))
            end--;
        return text[start..end];
    }
}
