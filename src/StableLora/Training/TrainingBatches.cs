using System.Threading.Channels;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Microsoft.Extensions.Logging;
using StableLora.Data;
using StableLora.Diagnostics;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>One micro-batch of preprocessed images (CPU, float32, [-1, 1]).</summary>
/// <param name="Pixels">[B, 3, size, size].</param>
/// <param name="Captions">Each image's own caption, or null to use the training caption.</param>
/// <param name="Names">The images' names, for messages.</param>
/// <param name="Indices">The images' dataset indices (for the latent cache).</param>
/// <param name="Epoch">The epoch this batch belongs to.</param>
/// <param name="NextPosition">The position in the epoch's order after this batch (the resume point).</param>
internal sealed record TrainingBatch(Tensor Pixels, string?[] Captions, string[] Names, int[] Indices, int Epoch, int NextPosition) : IDisposable
{
    /// <summary>With masked loss: [B, 1, H, W] per-pixel loss weights in [0, 1] (ones for images without a mask); else null.</summary>
    public Tensor? Masks { get; init; }

    /// <summary>Whether each image was mirrored.</summary>
    public bool[] Flipped { get; init; } = Array.Empty<bool>();

    /// <summary>Each image's resize and crop (see <see cref="PreprocessedImage.Geometry"/>).</summary>
    public string[] Geometries { get; init; } = Array.Empty<string>();

    /// <summary>Whether this batch is its epoch's last.</summary>
    public bool EndsEpoch { get; init; }

    /// <summary>With regularisation images: [B] per-image loss weights (sd-scripts' loss_weights); else null (all 1).</summary>
    public Tensor? LossWeights { get; init; }

    public void Dispose()
    {
        Pixels.Dispose();
        Masks?.Dispose();
        LossWeights?.Dispose();
    }
}

/// <summary>
/// Batches in a seeded order, decoded and preprocessed on a background thread so that the model never waits on image
/// decoding. The order of epoch e is a shuffle seeded by (seed, e); random crops and flips are seeded by
/// (seed, epoch, position). Nothing depends on earlier draws, so a run resumed at (epoch, position) sees exactly the
/// batches an uninterrupted run would. The last batch of an epoch may be smaller (no images are dropped).
/// </summary>
internal sealed class TrainingBatches : IDisposable
{
    private readonly IImageDataset _dataset;
    private readonly int[] _usable;
    private readonly int _batchSize;
    private readonly PreprocessOptions _preprocess;
    private readonly ulong _seed;
    private readonly bool _skipUnreadable;
    private readonly ILogger _logger;
    private readonly DatasetPlan? _plan;
    private readonly Channel<TrainingBatch> _channel = Channel.CreateBounded<TrainingBatch>(new BoundedChannelOptions(2) { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource _stop = new();
    private Task? _producer;

    public TrainingBatches(IImageDataset dataset, IReadOnlyList<int> usableIndices, int batchSize, PreprocessOptions preprocess, ulong seed,
        bool skipUnreadable, ILogger logger, DatasetPlan? plan = null)
    {
        _dataset = dataset;
        _plan = plan;
        _usable = plan?.Entries.ToArray() ?? usableIndices.ToArray();
        _batchSize = batchSize;
        _preprocess = preprocess;
        _seed = seed;
        _skipUnreadable = skipUnreadable;
        _logger = logger;
    }

    public int ImageCount => _usable.Length;

    /// <summary>Starts producing from (epoch, position).</summary>
    public void Start(int epoch, int position)
    {
        _producer = Task.Run(() => Produce(epoch, position, _stop.Token));
    }

    public async ValueTask<TrainingBatch> NextAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await _channel.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException e) when (e.InnerException is not null)
        {
            throw e.InnerException;
        }
    }

    /// <summary>The dataset positions of epoch <paramref name="epoch"/> (a permutation of the usable images).</summary>
    public int[] Order(int epoch)
    {
        var order = (int[])_usable.Clone();
        new Random(Mix(_seed, (ulong)epoch, 0x5EED)).Shuffle(order);
        return order;
    }

    public void Dispose()
    {
        _stop.Cancel();
        try
        {
            _producer?.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
        }

        while (_channel.Reader.TryRead(out var leftover))
            leftover.Dispose();
        _stop.Dispose();
    }

    private async Task Produce(int epoch, int position, CancellationToken token)
    {
        try
        {
            while (!token.IsCancellationRequested && _plan?.Buckets is not null)
            {
                var batches = BucketBatches(epoch);
                while (position < batches.Count && !token.IsCancellationRequested)
                {
                    var batch = BuildBucketBatch(batches[position], epoch, position) with { EndsEpoch = position + 1 == batches.Count };
                    position++;
                    await _channel.Writer.WriteAsync(batch, token).ConfigureAwait(false);
                }

                epoch++;
                position = 0;
            }

            while (!token.IsCancellationRequested)
            {
                var order = Order(epoch);
                while (position < order.Length && !token.IsCancellationRequested)
                {
                    int count = Math.Min(_batchSize, order.Length - position);
                    var batch = Build(order, epoch, position, count);
                    position += count;
                    await _channel.Writer.WriteAsync(batch, token).ConfigureAwait(false);
                }

                epoch++;
                position = 0;
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e)
        {
            _channel.Writer.TryComplete(e);
            return;
        }

        _channel.Writer.TryComplete();
    }

    private TrainingBatch Build(int[] order, int epoch, int start, int count)
    {
        var parts = new BatchParts(count);
        for (int i = 0; i < count; i++)
        {
            int index = order[start + i];
            var random = new Random(Mix(_seed, (ulong)epoch, (ulong)(start + i)));
            using var image = LoadWithFallback(order, index, ref parts.Indices[i]);
            parts.Add(i, ImagePreprocessor.ToTensors(image.Image, MaskOf(image), _preprocess, random), Caption(image.Caption, epoch, start + i), image.Name);
        }

        return parts.ToBatch(epoch, start + count, _plan) with { EndsEpoch = start + count == order.Length };
    }

    /// <summary>The image's mask when the batch carries masks (checked to have the image's size), else null.</summary>
    private Image<L8>? MaskOf(TrainingImage image)
    {
        if (_plan is not { MaskedLoss: true } || image.Mask is not { } mask)
            return null;
        if (mask.Width != image.Image.Width || mask.Height != image.Image.Height)
            throw new InvalidImageException(image.Name, $"its mask is {mask.Width}x{mask.Height} but the image is {image.Image.Width}x{image.Image.Height}");
        return mask;
    }

    /// <summary>A batch being assembled: pixels, masks, captions, names and the dataset indices used.</summary>
    private sealed class BatchParts(int count)
    {
        private readonly Tensor[] _pixels = new Tensor[count];
        private readonly Tensor?[] _masks = new Tensor?[count];
        private readonly string?[] _captions = new string?[count];
        private readonly string[] _names = new string[count];
        private readonly bool[] _flipped = new bool[count];
        private readonly string[] _geometries = new string[count];

        public int[] Indices { get; } = new int[count];

        public void Add(int i, PreprocessedImage image, string? caption, string name)
        {
            _pixels[i] = image.Pixels;
            _masks[i] = image.Mask;
            _flipped[i] = image.Flipped;
            _geometries[i] = image.Geometry;
            _captions[i] = caption;
            _names[i] = name;
        }

        public TrainingBatch ToBatch(int epoch, int nextPosition, DatasetPlan? plan)
        {
            var stacked = stack(_pixels);
            Tensor? masks = null;
            if (plan is { MaskedLoss: true })
            {
                // sd-scripts: once one image of a batch has a mask, the others get masks of ones.
                var filled = _masks.Select((m, i) => m ?? ones(new long[] { 1, _pixels[i].shape[1], _pixels[i].shape[2] })).ToList();
                masks = stack(filled);
                foreach (var mask in filled)
                    mask.Dispose();
            }

            foreach (var tensor in _pixels)
                tensor.Dispose();
            var weights = plan is { HasRegularization: true } ? tensor(Indices.Select(i => (float)plan.LossWeightOf(i)).ToArray()) : null;
            return new TrainingBatch(stacked, _captions, _names, Indices, epoch, nextPosition) { Masks = masks, LossWeights = weights, Flipped = _flipped, Geometries = _geometries };
        }
    }

    /// <summary>
    /// The batches of epoch <paramref name="epoch"/> with buckets, as sd-scripts: each bucket's entries shuffled, cut into
    /// batches (the last one of a bucket may be smaller), and the batches of all buckets shuffled; seeded by (seed,
    /// epoch) only. Each batch is its bucket's entries plus the bucket's index.
    /// </summary>
    public List<(int[] Members, int Bucket)> BucketBatches(int epoch)
    {
        var random = new Random(Mix(_seed ^ 0xB0C4E75EEDUL, (ulong)epoch, 0xB0C7));
        var batches = new List<(int[] Members, int Bucket)>();
        for (int b = 0; b < _plan!.BucketMembers.Length; b++)
        {
            var members = (int[])_plan.BucketMembers[b].Clone();
            random.Shuffle(members);
            for (int start = 0; start < members.Length; start += _batchSize)
                batches.Add((members[start..Math.Min(members.Length, start + _batchSize)], b));
        }

        var shuffled = batches.ToArray();
        random.Shuffle(shuffled);
        return shuffled.ToList();
    }

    private TrainingBatch BuildBucketBatch((int[] Members, int Bucket) batch, int epoch, int position)
    {
        int count = batch.Members.Length;
        var parts = new BatchParts(count);
        var pool = _plan!.BucketMembers[batch.Bucket].Distinct().ToArray();
        for (int i = 0; i < count; i++)
        {
            ulong slot = (ulong)position * (ulong)_batchSize + (ulong)i;
            var random = new Random(Mix(_seed ^ 0xC20BUL, (ulong)epoch, slot));
            using var image = LoadWithFallback(pool, batch.Members[i], ref parts.Indices[i]);
            var preprocessed = ImagePreprocessor.ToTensors(image.Image, MaskOf(image), _plan.Buckets![parts.Indices[i]], _preprocess.RandomCrop, _preprocess.RandomFlip, random);
            parts.Add(i, preprocessed, Caption(image.Caption, epoch, (int)slot), image.Name);
        }

        return parts.ToBatch(epoch, position + 1, _plan);
    }

    /// <summary>The image's caption after kohya's processing (untouched, null included, when there is none to do).</summary>
    private string? Caption(string? own, int epoch, int slot)
    {
        if (_plan is null || _plan.Captions.IsIdentity)
            return own;
        var random = new Random(Mix(_seed ^ 0xCA97_10E5UL, (ulong)epoch, (ulong)slot));
        return CaptionProcessing.Process(own ?? _plan.DefaultCaption, _plan.Captions, epoch + 1, random);
    }

    /// <summary>Loads an image; with skipping on, an image that fails to decode is replaced by the next usable one (and named in a warning).</summary>
    private TrainingImage LoadWithFallback(int[] order, int index, ref int usedIndex)
    {
        int attempt = index;
        for (int tries = 0; ; tries++)
        {
            try
            {
                usedIndex = attempt;
                return _dataset.Load(attempt);
            }
            catch (InvalidImageException e) when (_skipUnreadable && tries < order.Length)
            {
                Log.ImageSkipped(_logger, e.ImageName, e.Message);
                attempt = order[(Array.IndexOf(order, attempt) + 1) % order.Length];
            }
        }
    }

    /// <summary>A 32-bit seed from the run seed and two counters (SplitMix64 finaliser).</summary>
    private static int Mix(ulong seed, ulong a, ulong b)
    {
        ulong z = seed + 0x9E3779B97F4A7C15UL * (a + 1) + 0xBF58476D1CE4E5B9UL * (b + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }
}
