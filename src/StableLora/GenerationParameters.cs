using System.Globalization;
using System.Text;

namespace StableLora;

/// <summary>
/// What produced an image, in the <c>parameters</c> text that AUTOMATIC1111 writes into its PNGs and that civitai and
/// most image browsers read:
/// <code>
/// a photo of a cat &lt;lora:my_style:0.8&gt;
/// Negative prompt: blurry
/// Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, Model: sd15, Lora hashes: "my_style: 0a1b2c3d4e5f", Version: StableLora 0.1.0
/// </code>
/// </summary>
public sealed record GenerationParameters
{
    /// <summary>The prompt as given (LoRA tags are added when written).</summary>
    public required string Prompt { get; init; }

    /// <summary>The negative prompt ("" when none).</summary>
    public required string NegativePrompt { get; init; }

    /// <summary>Denoising steps asked for.</summary>
    public required int Steps { get; init; }

    /// <summary>The A1111 sampler name ("PLMS", "DDIM", "Euler a", "DPM++ 2M", ...).</summary>
    public required string Sampler { get; init; }

    /// <summary>The guidance scale.</summary>
    public required double CfgScale { get; init; }

    /// <summary>The seed.</summary>
    public required ulong Seed { get; init; }

    /// <summary>Image width.</summary>
    public required int Width { get; init; }

    /// <summary>Image height.</summary>
    public required int Height { get; init; }

    /// <summary>The model's name.</summary>
    public required string ModelName { get; init; }

    /// <summary>The first 10 hex digits of the model file's sha256 (A1111's short hash), or null.</summary>
    public string? ModelHash { get; init; }

    /// <summary>The LoRAs applied, with their weights.</summary>
    public required IReadOnlyList<LoraReference> Loras { get; init; }

    /// <summary>The program that made the image.</summary>
    public required string Version { get; init; }

    /// <summary>CLIP skip (<see cref="GenerationOptions.ClipSkip"/>); written as <c>Clip skip: n</c> when not 1, as A1111 does.</summary>
    /// <value>The default value is 1.</value>
    public int ClipSkip { get; init; } = 1;

    /// <summary>
    /// Image to image's strength (<see cref="GenerationOptions.Strength"/>), written as <c>Denoising strength: 0.8</c> as
    /// A1111's img2img does; null for text to image (not written).
    /// </summary>
    public double? DenoisingStrength { get; init; }

    /// <summary>The PNG text-chunk keyword A1111 uses.</summary>
    public const string PngKeyword = "parameters";

    /// <summary>The text in A1111's format.</summary>
    public string ToA1111Text()
    {
        var text = new StringBuilder(Prompt);
        foreach (var lora in Loras)
            text.Append(CultureInfo.InvariantCulture, $" <lora:{lora.Name}:{Number(lora.Weight)}>");
        text.Append('\n');
        if (NegativePrompt.Length > 0)
            text.Append("Negative prompt: ").Append(NegativePrompt).Append('\n');

        var fields = new List<(string, string)>
        {
            ("Steps", Steps.ToString(CultureInfo.InvariantCulture)),
            ("Sampler", Sampler),
            ("CFG scale", Number(CfgScale)),
            ("Seed", Seed.ToString(CultureInfo.InvariantCulture)),
            ("Size", $"{Width}x{Height}"),
        };
        if (ModelHash is not null)
            fields.Add(("Model hash", ModelHash));
        fields.Add(("Model", ModelName));
        if (DenoisingStrength is { } strength)
            fields.Add(("Denoising strength", Number(strength)));
        if (ClipSkip != 1)
            fields.Add(("Clip skip", ClipSkip.ToString(CultureInfo.InvariantCulture)));
        if (Loras.Count > 0)
            fields.Add(("Lora hashes", string.Join(", ", Loras.Select(l => $"{l.Name}: {l.Hash ?? "unknown"}"))));
        fields.Add(("Version", Version));
        text.Append(string.Join(", ", fields.Select(f => $"{f.Item1}: {Quote(f.Item2)}")));
        return text.ToString();
    }

    /// <summary>Parses A1111's format (the inverse of <see cref="ToA1111Text"/>).</summary>
    /// <param name="text">The text of a PNG's <c>parameters</c> chunk.</param>
    /// <exception cref="FormatException">The text has no settings line.</exception>
    public static GenerationParameters Parse(string text)
    {
        var lines = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        int settingsLine = Array.FindLastIndex(lines, l => l.StartsWith("Steps: ", StringComparison.Ordinal));
        if (settingsLine < 0)
            throw new FormatException("no 'Steps: ...' settings line in the parameters text");

        var promptLines = new List<string>();
        var negativeLines = new List<string>();
        bool negative = false;
        foreach (var line in lines.Take(settingsLine))
        {
            if (line.StartsWith("Negative prompt: ", StringComparison.Ordinal))
            {
                negative = true;
                negativeLines.Add(line["Negative prompt: ".Length..]);
            }
            else
            {
                (negative ? negativeLines : promptLines).Add(line);
            }
        }

        var fields = SplitFields(lines[settingsLine]);
        string prompt = string.Join("\n", promptLines);
        var loras = new List<LoraReference>();
        var hashes = fields.TryGetValue("Lora hashes", out var hashText)
            ? hashText.Split(", ").Select(h => h.Split(": ", 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1])
            : new Dictionary<string, string>();
        int tag;
        while ((tag = prompt.LastIndexOf(" <lora:", StringComparison.Ordinal)) >= 0 && prompt.EndsWith('>'))
        {
            var parts = prompt[(tag + " <lora:".Length)..^1].Split(':');
            loras.Insert(0, new LoraReference(parts[0], double.Parse(parts[1], CultureInfo.InvariantCulture), hashes.GetValueOrDefault(parts[0])));
            prompt = prompt[..tag];
        }

        var size = fields["Size"].Split('x');
        return new GenerationParameters
        {
            Prompt = prompt,
            NegativePrompt = string.Join("\n", negativeLines),
            Steps = int.Parse(fields["Steps"], CultureInfo.InvariantCulture),
            Sampler = fields["Sampler"],
            CfgScale = double.Parse(fields["CFG scale"], CultureInfo.InvariantCulture),
            Seed = ulong.Parse(fields["Seed"], CultureInfo.InvariantCulture),
            Width = int.Parse(size[0], CultureInfo.InvariantCulture),
            Height = int.Parse(size[1], CultureInfo.InvariantCulture),
            ModelName = fields.GetValueOrDefault("Model", ""),
            ModelHash = fields.GetValueOrDefault("Model hash"),
            Loras = loras,
            Version = fields.GetValueOrDefault("Version", ""),
            ClipSkip = fields.TryGetValue("Clip skip", out var clipSkip) ? int.Parse(clipSkip, CultureInfo.InvariantCulture) : 1,
            DenoisingStrength = fields.TryGetValue("Denoising strength", out var strength) ? double.Parse(strength, CultureInfo.InvariantCulture) : null,
        };
    }

    private static string Number(double value) => value.ToString("0.###############", CultureInfo.InvariantCulture);

    private static string Quote(string value) =>
        value.Contains(',') || value.Contains(':') || value.Contains('"') ? "\"" + value.Replace("\"", "\\\"", StringComparison.Ordinal) + "\"" : value;

    private static Dictionary<string, string> SplitFields(string line)
    {
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        int i = 0;
        while (i < line.Length)
        {
            int colon = line.IndexOf(": ", i, StringComparison.Ordinal);
            if (colon < 0)
                break;
            string key = line[i..colon];
            i = colon + 2;
            var value = new StringBuilder();
            if (i < line.Length && line[i] == '"')
            {
                for (i++; i < line.Length && line[i] != '"'; i++)
                {
                    if (line[i] == '\\' && i + 1 < line.Length)
                        i++;
                    value.Append(line[i]);
                }

                i++;
            }
            else
            {
                int comma = line.IndexOf(", ", i, StringComparison.Ordinal);
                int end = comma < 0 ? line.Length : comma;
                value.Append(line, i, end - i);
                i = end;
            }

            fields[key] = value.ToString();
            if (i < line.Length && line.AsSpan(i).StartsWith(", "))
                i += 2;
        }

        return fields;
    }
}

/// <summary>A LoRA applied to an image.</summary>
/// <param name="Name">Its name (the file name without extension).</param>
/// <param name="Weight">Its weight.</param>
/// <param name="Hash">A1111's short hash (AutoV3: first 12 hex digits of the sha256 of the safetensors data, or of the whole file), or null.</param>
public sealed record LoraReference(string Name, double Weight, string? Hash);
