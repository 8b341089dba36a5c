namespace StableLora.Data;

/// <summary>kohya's caption options (sd-scripts' names in brackets).</summary>
/// <param name="Prefix">Put before every caption, with a space (caption_prefix); null or empty: none.</param>
/// <param name="Suffix">Put after every caption, with a space (caption_suffix); null or empty: none.</param>
/// <param name="Shuffle">Shuffle the comma-separated tags (shuffle_caption).</param>
/// <param name="KeepTokens">Leading tags that stay in place (keep_tokens).</param>
/// <param name="KeepTokensSeparator">Tags before it stay in place, and those after a second one at the end (keep_tokens_separator); null or empty: none.</param>
/// <param name="DropoutRate">Probability of training an image with the empty caption (caption_dropout_rate).</param>
/// <param name="TagDropoutRate">Probability of leaving out each movable tag (caption_tag_dropout_rate).</param>
/// <param name="DropoutEveryNEpochs">Train every n-th epoch (counted from 1) with empty captions (caption_dropout_every_n_epochs); 0: never.</param>
internal sealed record CaptionSettings(string? Prefix = null, string? Suffix = null, bool Shuffle = false, int KeepTokens = 0, string? KeepTokensSeparator = null,
    double DropoutRate = 0, double TagDropoutRate = 0, int DropoutEveryNEpochs = 0)
{
    /// <summary>True when processing leaves every caption as it is (the default: captions are not touched at all).</summary>
    public bool IsIdentity => string.IsNullOrEmpty(Prefix) && string.IsNullOrEmpty(Suffix) && !Shuffle && DropoutRate <= 0 && TagDropoutRate <= 0 && DropoutEveryNEpochs <= 0;

    /// <summary>True when captions vary from draw to draw (not only from epoch to epoch).</summary>
    public bool IsRandom => Shuffle || DropoutRate > 0 || TagDropoutRate > 0;
}

/// <summary>
/// sd-scripts' BaseDataset.process_caption (without wildcards and token warm-up): prefix and suffix, caption dropout
/// (at random, or every n-th epoch), the first line only, then with shuffling or tag dropout the tags split at commas:
/// the kept ones (the first <c>keep_tokens</c>, or those before <c>keep_tokens_separator</c> and after a second one)
/// stay in place, the others are shuffled and dropped at random, and all are joined with ", ". The draws come from the
/// <see cref="Random"/> given, in sd-scripts' order (dropout, shuffle, then one draw per tag).
/// </summary>
internal static class CaptionProcessing
{
    private const string Separator = ",";

    /// <param name="caption">The image's caption (its own, the class caption or the training caption).</param>
    /// <param name="settings">What to do.</param>
    /// <param name="epoch">The epoch counted from 1, as sd-scripts' current_epoch.</param>
    /// <param name="random">The draws.</param>
    public static string Process(string caption, CaptionSettings settings, int epoch, Random random)
    {
        if (!string.IsNullOrEmpty(settings.Prefix))
            caption = settings.Prefix + " " + caption;
        if (!string.IsNullOrEmpty(settings.Suffix))
            caption = caption + " " + settings.Suffix;

        bool dropOut = settings.DropoutRate > 0 && random.NextDouble() < settings.DropoutRate;
        dropOut = dropOut || (settings.DropoutEveryNEpochs > 0 && epoch % settings.DropoutEveryNEpochs == 0);
        if (dropOut)
            return "";

        caption = caption.Split('\n')[0];
        if (!settings.Shuffle && settings.TagDropoutRate <= 0)
            return caption;

        List<string> fixedTokens = new(), flexTokens, fixedSuffix = new();
        string? separator = settings.KeepTokensSeparator;
        if (!string.IsNullOrEmpty(separator) && caption.Contains(separator, StringComparison.Ordinal))
        {
            int at = caption.IndexOf(separator, StringComparison.Ordinal);
            string fixedPart = caption[..at];
            string flexPart = caption[(at + separator.Length)..];
            int second = flexPart.IndexOf(separator, StringComparison.Ordinal);
            if (second >= 0)
            {
                fixedSuffix = Tags(flexPart[(second + separator.Length)..]);
                flexPart = flexPart[..second];
            }

            fixedTokens = Tags(fixedPart);
            flexTokens = Tags(flexPart);
        }
        else
        {
            var tokens = caption.Trim().Split(Separator).Select(PythonStrip).ToList();
            flexTokens = tokens;
            if (settings.KeepTokens > 0)
            {
                fixedTokens = tokens.Take(settings.KeepTokens).ToList();
                flexTokens = tokens.Skip(settings.KeepTokens).ToList();
            }
        }

        if (settings.Shuffle)
            Shuffle(flexTokens, random);
        if (settings.TagDropoutRate > 0)
            flexTokens = flexTokens.Where(_ => random.NextDouble() >= settings.TagDropoutRate).ToList();

        return string.Join(", ", fixedTokens.Concat(flexTokens).Concat(fixedSuffix));
    }

    /// <summary>sd-scripts' tag counting for ss_tag_frequency: each caption split at commas, stripped, lower-cased, empty tags left out.</summary>
    public static void CountTags(IDictionary<string, int> frequency, string caption)
    {
        foreach (var part in caption.Split(Separator))
        {
            string tag = PythonStrip(part);
            if (tag.Length == 0)
                continue;
            tag = tag.ToLowerInvariant();
            frequency[tag] = frequency.TryGetValue(tag, out int n) ? n + 1 : 1;
        }
    }

    private static List<string> Tags(string part) => part.Split(Separator).Select(PythonStrip).Where(t => t.Length > 0).ToList();

    /// <summary>Python's str.strip(): leading and trailing whitespace.</summary>
    private static string PythonStrip(string s) => s.Trim();

    /// <summary>Fisher-Yates from the back, as Python's random.shuffle (with .NET's draws).</summary>
    private static void Shuffle(List<string> items, Random random)
    {
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = random.Next(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
