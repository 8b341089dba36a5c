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
            Resolutions = buckets.Values.Select(b => (b.Width, b.Height)).Distinct().OrderBy(r => r.Width).ThenBy(r => r.Height).ToArray();
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

    /// <summary>sd-scripts' num_train_images: images times their repeats.</summary>
    public int TrainImageCount => Entries.Length;

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
            meanError = NumpySum(usable.Select(i => Math.Abs(buckets[i].AspectError)).ToArray()) / usable.Count;
        }

        var entries = usable.SelectMany(i => Enumerable.Repeat(i, RepeatsOf(dataset, i))).ToArray();
        var captions = new CaptionSettings(options.CaptionPrefix, options.CaptionSuffix, options.ShuffleCaption, options.KeepTokens, options.KeepTokensSeparator,
            options.CaptionDropoutRate, options.CaptionTagDropoutRate, options.CaptionDropoutEveryNEpochs);
        var plan = new DatasetPlan(entries, buckets, captions, options.Caption);
        if (buckets is not null)
            plan.BucketInfoJson = BucketInfo(plan, meanError);
        plan.DescribeFolders(dataset, usable);
        return plan;
    }

    /// <summary>The data folder as a dataset: sd-scripts' <c>&lt;repeats&gt;_&lt;name&gt;</c> sub-folders when it is laid out so, else a plain image folder.</summary>
    public static IImageDataset OpenFolder(LoraTrainingOptions options) =>
        !options.RecursiveDataset && KohyaFolderDataset.IsKohyaLayout(options.DataDirectory!)
            ? new KohyaFolderDataset(options.DataDirectory!, options.CaptionExtension)
            : new ImageFolderDataset(options.DataDirectory!, options.RecursiveDataset, options.UseCaptionFiles, options.CaptionExtension);

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

    private static int RepeatsOf(IImageDataset dataset, int index) => dataset is KohyaFolderDataset kohya ? kohya.SubsetOf(index).Repeats : 1;

    /// <summary>{"buckets": {"0": {"resolution": [w, h], "count": n}, ...}, "mean_img_ar_error": x} with Python's json.dumps spacing and float repr.</summary>
    private static string BucketInfo(DatasetPlan plan, double meanError)
    {
        var parts = plan.Resolutions.Select((r, i) =>
            $"\"{i}\": {{\"resolution\": [{r.Width}, {r.Height}], \"count\": {plan.BucketMembers[i].Length}}}");
        return $"{{\"buckets\": {{{string.Join(", ", parts)}}}, \"mean_img_ar_error\": {PythonFloats.Repr(meanError)}}}";
    }

    /// <summary>ss_tag_frequency and ss_dataset_dirs, keyed by folder name as sd-scripts (os.path.basename of the image folder).</summary>
    private void DescribeFolders(IImageDataset dataset, List<int> usable)
    {
        var tags = new Dictionary<string, Dictionary<string, int>>(StringComparer.Ordinal);
        var dirs = new Dictionary<string, (int Repeats, int Count)>(StringComparer.Ordinal);
        var order = new List<string>();
        if (dataset is KohyaFolderDataset kohya)
        {
            foreach (var subset in kohya.Subsets)
            {
                string name = Path.GetFileName(subset.Directory);
                if (!tags.ContainsKey(name))
                    order.Add(name);
                tags.TryAdd(name, new Dictionary<string, int>(StringComparer.Ordinal));
                dirs[name] = (subset.Repeats, subset.ImageCount);
            }

            for (int i = 0; i < kohya.Count; i++)
                CaptionProcessing.CountTags(tags[Path.GetFileName(kohya.SubsetOf(i).Directory)], kohya.CaptionOf(i));
        }
        else if (dataset is ImageFolderDataset folder)
        {
            string name = Path.GetFileName(folder.Directory);
            order.Add(name);
            tags[name] = new Dictionary<string, int>(StringComparer.Ordinal);
            dirs[name] = (1, folder.Count);
            for (int i = 0; i < folder.Count; i++)
                CaptionProcessing.CountTags(tags[name], folder.CaptionOf(i) ?? DefaultCaption);
        }

        TagFrequencyJson = "{" + string.Join(", ", order.Select(d =>
            $"{Json(d)}: {{{string.Join(", ", tags[d].Select(t => $"{Json(t.Key)}: {t.Value.ToString(CultureInfo.InvariantCulture)}"))}}}")) + "}";
        DatasetDirsJson = "{" + string.Join(", ", order.Select(d =>
            $"{Json(d)}: {{\"n_repeats\": {dirs[d].Repeats}, \"img_count\": {dirs[d].Count}}}")) + "}";
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
