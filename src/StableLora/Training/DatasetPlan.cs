using System.Globalization;
using System.Text.Json;
using StableLora.Data;
using StableLora.IO;

namespace StableLora.Training;

/// <summary>
/// What an epoch is made of, as sd-scripts arranges it: each usable image repeated by its folder's repeats, optionally
/// assigned to aspect-ratio buckets, and the caption processing; plus the kohya metadata that describes it
/// (ss_bucket_info, ss_tag_frequency, ss_dataset_dirs, ss_num_train_images).
/// </summary>
internal sealed class DatasetPlan
{
    private DatasetPlan(int[] entries, Dictionary<int, BucketChoice>? buckets, CaptionSettings captions, string defaultCaption)
    {
        Entries = entries;
        Buckets = buckets;
        Captions = captions;
        DefaultCaption = defaultCaption;
        if (buckets is not null)
        {
            Resolutions = entries.Select(e => (buckets[e].Width, buckets[e].Height)).Distinct().OrderBy(r => r.Width).ThenBy(r => r.Height).ToArray();
            var id = Resolutions.Select((r, i) => (r, i)).ToDictionary(p => p.r, p => p.i);
            var members = Resolutions.Select(_ => new List<int>()).ToArray();
            foreach (int entry in entries)
                members[id[(buckets[entry].Width, buckets[entry].Height)]].Add(entry);
            BucketMembers = members.Select(m => m.ToArray()).ToArray();
        }
    }

    /// <summary>The usable dataset indices, each as often as its repeats, in dataset order.</summary>
    public int[] Entries { get; }

    /// <summary>Each usable image's bucket by dataset index; null without bucketing.</summary>
    public Dictionary<int, BucketChoice>? Buckets { get; }

    /// <summary>The buckets in use, sorted by (width, height) as sd-scripts' BucketManager.sort.</summary>
    public (int Width, int Height)[] Resolutions { get; } = Array.Empty<(int, int)>();

    /// <summary>The entries of each bucket of <see cref="Resolutions"/> (repeats included), in dataset order.</summary>
    public int[][] BucketMembers { get; } = Array.Empty<int[]>();

    public CaptionSettings Captions { get; }

    /// <summary>The caption of images without their own (the training caption).</summary>
    public string DefaultCaption { get; }

    /// <summary>ss_bucket_info as sd-scripts writes it (null without bucketing).</summary>
    public string? BucketInfoJson { get; private set; }

    /// <summary>ss_tag_frequency: per dataset folder, each tag's count over its images' captions (before processing).</summary>
    public string TagFrequencyJson { get; private set; } = "{}";

    /// <summary>ss_dataset_dirs: per dataset folder, its repeats and image count.</summary>
    public string DatasetDirsJson { get; private set; } = "{}";

    /// <summary>sd-scripts' num_train_images: training images times their repeats (regularisation images not counted).</summary>
    public int TrainImageCount { get; private set; }

    /// <summary>sd-scripts' num_reg_images: regularisation images times their folders' repeats, before they are balanced against the training images.</summary>
    public int RegImageCount { get; private set; }

    /// <summary>The first regularisation index of the dataset (<see cref="int.MaxValue"/>: none).</summary>
    public int RegularizationStart { get; private set; } = int.MaxValue;

    /// <summary>The loss weight of regularisation images (sd-scripts' prior_loss_weight).</summary>
    public double PriorLossWeight { get; private set; } = 1.0;

    /// <summary>Whether batches carry loss masks.</summary>
    public bool MaskedLoss { get; private set; }

    /// <summary>Whether any entry is a regularisation image.</summary>
    public bool HasRegularization => RegularizationStart != int.MaxValue;

    /// <summary>The loss weight of the image at dataset index <paramref name="index"/> (sd-scripts' loss_weights).</summary>
    public double LossWeightOf(int index) => index >= RegularizationStart ? PriorLossWeight : 1.0;

    /// <summary>ss_reg_dataset_dirs: per regularisation folder, its repeats and image count.</summary>
    public string RegDatasetDirsJson { get; private set; } = "{}";

    /// <summary>Batches in one epoch (the last batch of each bucket may be smaller).</summary>
    public int BatchesPerEpoch(int batchSize) => BucketMembers.Length == 0
        ? (Entries.Length + batchSize - 1) / batchSize
        : BucketMembers.Sum(m => (m.Length + batchSize - 1) / batchSize);

    /// <summary>Plans the run's epochs over <paramref name="usable"/> images of <paramref name="dataset"/>.</summary>
    /// <param name="dataset">The images.</param>
    /// <param name="usable">The indices that can be read; with bucketing, images that then fail to decode are dropped when <paramref name="skipUnreadable"/>.</param>
    /// <param name="options">The run's options.</param>
    /// <param name="skipUnreadable">Drop images whose size cannot be read instead of failing.</param>
    /// <param name="onSkipped">Told of each image dropped.</param>
    public static DatasetPlan Create(IImageDataset dataset, List<int> usable, LoraTrainingOptions options, bool skipUnreadable, Action<InvalidImageException> onSkipped)
    {
        Dictionary<int, BucketChoice>? buckets = null;
        double meanError = 0;
        if (options.EnableBucket)
        {
            var (min, max) = options.BucketSides();
            var selector = new BucketSelector(options.BucketNoUpscale, options.Resolution, min, max, options.BucketResoSteps);
            buckets = new Dictionary<int, BucketChoice>();
            foreach (int index in usable.ToList())
            {
                try
                {
                    using var image = dataset.Load(index);
                    buckets[index] = selector.Select(image.Image.Width, image.Image.Height);
                }
                catch (InvalidImageException e) when (skipUnreadable)
                {
                    onSkipped(e);
                    usable.Remove(index);
                }
                catch (InvalidDataException e)
                {
                    throw new InvalidImageException(dataset.NameOf(index), e.Message, e);
                }
            }

            if (usable.Count == 0)
                throw new InvalidDataException("none of the dataset's images can be read");
        }

        int regStart = dataset is RegularizedDataset regularized ? regularized.TrainCount : int.MaxValue;
        var trainEntries = usable.Where(i => i < regStart).SelectMany(i => Enumerable.Repeat(i, RepeatsOf(dataset, i))).ToArray();
        var regUsable = usable.Where(i => i >= regStart).ToList();
        int regImageCount = regUsable.Sum(i => RepeatsOf(dataset, i));
        var entries = trainEntries.Concat(BalancedRegularization(regUsable, i => RepeatsOf(dataset, i), trainEntries.Length)).ToArray();
        if (buckets is not null)
        {
            // Over the images sd-scripts registers, in its order: regularisation images beyond the balance have no bucket there.
            var registered = entries.Distinct().ToArray();
            meanError = NumpySum(registered.Select(i => Math.Abs(buckets[i].AspectError)).ToArray()) / registered.Length;
        }

        var captions = new CaptionSettings(options.CaptionPrefix, options.CaptionSuffix, options.ShuffleCaption, options.KeepTokens, options.KeepTokensSeparator,
            options.CaptionDropoutRate, options.CaptionTagDropoutRate, options.CaptionDropoutEveryNEpochs);
        var plan = new DatasetPlan(entries, buckets, captions, options.Caption)
        {
            TrainImageCount = trainEntries.Length,
            RegImageCount = regImageCount,
            RegularizationStart = regUsable.Count > 0 ? regStart : int.MaxValue,
            PriorLossWeight = options.PriorLossWeight,
            MaskedLoss = options.MaskedLoss,
        };
        if (buckets is not null)
            plan.BucketInfoJson = BucketInfo(plan, meanError);
        plan.DescribeFolders(dataset);
        return plan;
    }

    /// <summary>The data folder as a dataset: sd-scripts' <c>&lt;repeats&gt;_&lt;name&gt;</c> sub-folders when it is laid out so, else a plain image folder.</summary>
    public static IImageDataset OpenFolder(LoraTrainingOptions options) =>
        options.Subsets.Any(s => !s.IsRegularization)
            ? KohyaFolderDataset.FromSubsets(SubsetFolders(options, regularization: false), options.CaptionExtension)
            : !options.RecursiveDataset && KohyaFolderDataset.IsKohyaLayout(options.DataDirectory!)
            ? new KohyaFolderDataset(options.DataDirectory!, options.CaptionExtension)
            : new ImageFolderDataset(options.DataDirectory!, options.RecursiveDataset, options.UseCaptionFiles, options.CaptionExtension);

    /// <summary>
    /// The run's whole dataset: the training images (with their masks under masked loss), followed by the
    /// regularisation folder's images when there is one (sd-scripts' reg subsets: <c>&lt;repeats&gt;_&lt;class&gt;</c>
    /// sub-folders, or a plain folder whose caption files are read). Under masked loss from alpha channels the
    /// regularisation images are masked by theirs too, as sd-scripts' <c>--alpha_mask</c> applies to every subset.
    /// </summary>
    public static IImageDataset Compose(IImageDataset train, LoraTrainingOptions options)
    {
        var images = options.MaskedLoss ? new MaskedDataset(train, options.MaskDirectory) : train;
        IImageDataset reg;
        if (options.Subsets.Any(s => s.IsRegularization))
            reg = KohyaFolderDataset.FromSubsets(SubsetFolders(options, regularization: true), options.CaptionExtension);
        else if (options.RegularizationDirectory is { } regDirectory)
            reg = KohyaFolderDataset.IsKohyaLayout(regDirectory)
                ? new KohyaFolderDataset(regDirectory, options.CaptionExtension)
                : new ImageFolderDataset(regDirectory, recursive: false, useCaptionFiles: true, options.CaptionExtension);
        else
            return images;
        if (options.MaskedLoss && options.MaskDirectory is null)
            reg = new MaskedDataset(reg, null);
        return new RegularizedDataset(images, reg);
    }

    private static List<(string Folder, int Repeats, string ClassCaption)> SubsetFolders(LoraTrainingOptions options, bool regularization) =>
        options.Subsets.Where(s => s.IsRegularization == regularization).Select(s => (s.ImageDirectory, s.Repeats, s.ClassTokens ?? options.Caption)).ToList();

    /// <summary>
    /// sd-scripts' balancing of regularisation images against <paramref name="trainCount"/> training entries: the
    /// images are taken in order with their repeats until they reach the count; while they fall short, each gets one
    /// more repeat in turn. Returns the entries (each index as often as its final repeats).
    /// </summary>
    internal static IEnumerable<int> BalancedRegularization(IReadOnlyList<int> images, Func<int, int> repeatsOf, int trainCount)
    {
        var repeats = new List<(int Index, int Repeats)>();
        int n = 0;
        bool firstLoop = true;
        while (images.Count > 0 && n < trainCount)
        {
            for (int k = 0; k < images.Count; k++)
            {
                if (firstLoop)
                {
                    repeats.Add((images[k], repeatsOf(images[k])));
                    n += repeatsOf(images[k]);
                }
                else
                {
                    repeats[k] = (repeats[k].Index, repeats[k].Repeats + 1);
                    n += 1;
                }

                if (n >= trainCount)
                    break;
            }

            firstLoop = false;
        }

        return repeats.SelectMany(r => Enumerable.Repeat(r.Index, r.Repeats));
    }

    /// <summary>The options with MaxSteps from MaxEpochs when set, as sd-scripts: epochs x ceil(batches per epoch / gradient accumulation).</summary>
    public LoraTrainingOptions WithEpochLength(LoraTrainingOptions options)
    {
        if (options.MaxEpochs is not { } epochs)
            return options;
        long steps = (long)epochs * StepsPerEpoch(options);
        if (steps > int.MaxValue || steps < (options.WarmupSteps ?? 0))
            throw new InvalidOptionsException(nameof(options.MaxEpochs), epochs,
                $"gives {steps} steps ({StepsPerEpoch(options)} per epoch), {(steps > int.MaxValue ? "too many" : $"fewer than WarmupSteps ({options.WarmupSteps})")}");
        return options with { MaxSteps = (int)steps };
    }

    /// <summary>Optimizer steps per epoch: ceil(batches per epoch / gradient accumulation).</summary>
    public int StepsPerEpoch(LoraTrainingOptions options) =>
        (BatchesPerEpoch(options.BatchSize) + options.GradientAccumulationSteps - 1) / options.GradientAccumulationSteps;

    /// <summary>The dataset's ss_* keys as sd-scripts' train_network.py writes them.</summary>
    /// <param name="extra">Where they go.</param>
    /// <param name="options">The run's options (MaxSteps already from MaxEpochs).</param>
    /// <param name="steps">Steps taken.</param>
    /// <param name="epoch">The epoch of the last batch, from 0.</param>
    public void AddMetadata(IDictionary<string, string> extra, LoraTrainingOptions options, long steps, int epoch)
    {
        static string Bool(bool b) => b ? "True" : "False";
        static string Int(long n) => n.ToString(CultureInfo.InvariantCulture);
        var (min, max) = options.BucketSides();
        extra["ss_num_train_images"] = Int(TrainImageCount);
        extra["ss_num_epochs"] = Int((options.MaxSteps + StepsPerEpoch(options) - 1) / StepsPerEpoch(options));
        extra["ss_epoch"] = Int(steps == 0 ? 0 : epoch + 1);
        extra["ss_steps"] = Int(steps);
        extra["ss_enable_bucket"] = Bool(options.EnableBucket);
        extra["ss_bucket_no_upscale"] = Bool(options.EnableBucket && options.BucketNoUpscale);
        extra["ss_min_bucket_reso"] = options.EnableBucket ? Int(min) : "None";
        extra["ss_max_bucket_reso"] = options.EnableBucket ? Int(max) : "None";
        extra["ss_bucket_info"] = BucketInfoJson ?? "null";
        extra["ss_shuffle_caption"] = Bool(options.ShuffleCaption);
        extra["ss_keep_tokens"] = Int(options.KeepTokens);
        extra["ss_caption_dropout_rate"] = PythonFloats.Repr(options.CaptionDropoutRate);
        extra["ss_caption_dropout_every_n_epochs"] = Int(options.CaptionDropoutEveryNEpochs);
        extra["ss_caption_tag_dropout_rate"] = PythonFloats.Repr(options.CaptionTagDropoutRate);
        extra["ss_tag_frequency"] = TagFrequencyJson;
        extra["ss_dataset_dirs"] = DatasetDirsJson;
        extra["ss_reg_dataset_dirs"] = RegDatasetDirsJson;
        extra["ss_num_reg_images"] = Int(RegImageCount);
        extra["ss_prior_loss_weight"] = PythonFloats.Repr(options.PriorLossWeight);
    }

    /// <summary>numpy's pairwise summation of float64 (np.mean's sum), so that mean_img_ar_error matches to the last bit.</summary>
    internal static double NumpySum(ReadOnlySpan<double> a)
    {
        int n = a.Length;
        if (n < 8)
        {
            double sum = 0;
            foreach (double x in a)
                sum += x;
            return sum;
        }

        if (n <= 128)
        {
            Span<double> r = stackalloc double[8];
            a[..8].CopyTo(r);
            int i = 8;
            for (; i < n - n % 8; i += 8)
            {
                for (int j = 0; j < 8; j++)
                    r[j] += a[i + j];
            }

            double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for (; i < n; i++)
                res += a[i];
            return res;
        }

        int half = n / 2;
        half -= half % 8;
        return NumpySum(a[..half]) + NumpySum(a[half..]);
    }

    private static int RepeatsOf(IImageDataset dataset, int index)
    {
        if (dataset is RegularizedDataset regularized)
        {
            return index < regularized.TrainCount
                ? RepeatsOf(regularized.Train, index)
                : RepeatsOf(regularized.Regularization, index - regularized.TrainCount);
        }

        return RegularizedDataset.Unwrap(dataset) is KohyaFolderDataset kohya ? kohya.SubsetOf(index).Repeats : 1;
    }

    /// <summary>{"buckets": {"0": {"resolution": [w, h], "count": n}, ...}, "mean_img_ar_error": x} with Python's json.dumps spacing and float repr.</summary>
    private static string BucketInfo(DatasetPlan plan, double meanError)
    {
        var parts = plan.Resolutions.Select((r, i) =>
            $"\"{i}\": {{\"resolution\": [{r.Width}, {r.Height}], \"count\": {plan.BucketMembers[i].Length}}}");
        return $"{{\"buckets\": {{{string.Join(", ", parts)}}}, \"mean_img_ar_error\": {PythonFloats.Repr(meanError)}}}";
    }

    /// <summary>
    /// ss_tag_frequency, ss_dataset_dirs and ss_reg_dataset_dirs, keyed by folder name as sd-scripts
    /// (os.path.basename of the image folder); the tags of regularisation folders are counted too, as sd-scripts does.
    /// </summary>
    private void DescribeFolders(IImageDataset dataset)
    {
        var tags = new Dictionary<string, Dictionary<string, int>>(StringComparer.Ordinal);
        var order = new List<string>();
        var train = Folders(dataset is RegularizedDataset r ? r.Train : dataset).ToList();
        var reg = dataset is RegularizedDataset regularized ? Folders(regularized.Regularization).ToList() : new();
        foreach (var folder in train.Concat(reg))
        {
            if (!tags.ContainsKey(folder.Name))
            {
                order.Add(folder.Name);
                tags[folder.Name] = new Dictionary<string, int>(StringComparer.Ordinal);
            }

            foreach (string caption in folder.Captions)
                CaptionProcessing.CountTags(tags[folder.Name], caption);
        }

        TagFrequencyJson = "{" + string.Join(", ", order.Select(d =>
            $"{Json(d)}: {{{string.Join(", ", tags[d].Select(t => $"{Json(t.Key)}: {t.Value.ToString(CultureInfo.InvariantCulture)}"))}}}")) + "}";
        DatasetDirsJson = DirsJson(train);
        RegDatasetDirsJson = DirsJson(reg);
    }

    private static string DirsJson(IEnumerable<(string Name, int Repeats, int Count, IEnumerable<string> Captions)> folders)
    {
        var dirs = new Dictionary<string, (int Repeats, int Count)>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var folder in folders)
        {
            if (!dirs.ContainsKey(folder.Name))
                order.Add(folder.Name);
            dirs[folder.Name] = (folder.Repeats, folder.Count);
        }

        return "{" + string.Join(", ", order.Select(d => $"{Json(d)}: {{\"n_repeats\": {dirs[d].Repeats}, \"img_count\": {dirs[d].Count}}}")) + "}";
    }

    /// <summary>The image folders behind a dataset: name, repeats, image count and each image's caption before processing.</summary>
    private IEnumerable<(string Name, int Repeats, int Count, IEnumerable<string> Captions)> Folders(IImageDataset dataset)
    {
        switch (RegularizedDataset.Unwrap(dataset))
        {
            case KohyaFolderDataset kohya:
                foreach (var (subset, index) in kohya.Subsets.Select((s, i) => (s, i)))
                {
                    var captions = Enumerable.Range(0, kohya.Count).Where(i => kohya.SubsetOf(i) == subset).Select(kohya.CaptionOf);
                    yield return (Path.GetFileName(subset.Directory), subset.Repeats, subset.ImageCount, captions);
                }

                break;
            case ImageFolderDataset folder:
                yield return (Path.GetFileName(folder.Directory), 1, folder.Count, Enumerable.Range(0, folder.Count).Select(i => folder.CaptionOf(i) ?? DefaultCaption));
                break;
        }
    }

    /// <summary>A JSON string as Python's json.dumps writes it (ASCII only, non-ASCII as \uXXXX).</summary>
    private static string Json(string s)
    {
        var b = new System.Text.StringBuilder("\"");
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': b.Append("\\\""); break;
                case '\\': b.Append("\\\\"); break;
                case '\n': b.Append("\\n"); break;
                case '\r': b.Append("\\r"); break;
                case '\t': b.Append("\\t"); break;
                case '\b': b.Append("\\b"); break;
                case '\f': b.Append("\\f"); break;
                default:
                    if (c < 0x20 || c > 0x7e)
                        b.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        b.Append(c);
                    break;
            }
        }

        return b.Append('"').ToString();
    }
}
