using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.Layers;
using StableLora.TextEncoder;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// Text embeddings by caption, computed once each (a single static caption is encoded a single time), with sd-scripts'
/// <c>max_token_length</c> and <c>clip_skip</c> (<see cref="PromptChunks.KohyaConditioning"/>; 75 and 1 give the plain
/// last hidden state of 77 tokens). The cache lives for one run, whose token length and CLIP skip are fixed, so the
/// caption alone keys it.
/// </summary>
internal sealed class CaptionEmbeddings : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly string _defaultCaption;
    private readonly ScalarType _dtype;
    private readonly bool _cache;
    private readonly int _maxTokenLength;
    private readonly int _clipSkip;
    private readonly Dictionary<string, Tensor> _cached = new(StringComparer.Ordinal);

    /// <param name="model">The model whose tokenizer and text encoder encode the captions.</param>
    /// <param name="defaultCaption">The caption of images without their own.</param>
    /// <param name="dtype">The dtype the UNet takes.</param>
    /// <param name="cache">Encode each distinct caption once (the text encoder is frozen); false: encode every call with gradients (it has LoRA).</param>
    /// <param name="maxTokenLength">sd-scripts' <c>max_token_length</c>: 75, 150 or 225.</param>
    /// <param name="clipSkip">sd-scripts' <c>clip_skip</c> (1: the last layer).</param>
    public CaptionEmbeddings(StableDiffusionModel model, string defaultCaption, ScalarType dtype, bool cache = true, int maxTokenLength = 75, int clipSkip = 1)
    {
        _model = model;
        _defaultCaption = defaultCaption;
        _dtype = dtype;
        _cache = cache;
        _maxTokenLength = maxTokenLength;
        _clipSkip = clipSkip;
    }

    /// <summary>[B, max token length + 2, hidden] for the batch's captions (null: the training caption); a new tensor each call.</summary>
    public Tensor For(IReadOnlyList<string?> captions)
    {
        var texts = captions.Select(c => c ?? _defaultCaption).ToList();
        if (!_cache)
            return Encode(texts).to(_dtype);

        return cat(texts.Select(Embedding).ToList(), 0);
    }

    private Tensor Encode(IReadOnlyList<string> texts) =>
        PromptChunks.KohyaConditioning(_model.TextEncoder, _model.Tokenizer, texts, _maxTokenLength, _clipSkip);

    private Tensor Embedding(string caption)
    {
        if (!_cached.TryGetValue(caption, out var embedding))
        {
            using var scope = NewDisposeScope();
            using (no_grad())
                embedding = Encode(new[] { caption }).to(_dtype).MoveToOuterDisposeScope();
            embedding = embedding.DetachFromDisposeScope();
            _cached[caption] = embedding;
        }

        return embedding;
    }

    public void Dispose()
    {
        foreach (var embedding in _cached.Values)
            embedding.Dispose();
        _cached.Clear();
    }
}

/// <summary>Calls every observer; one that throws is logged and the others still run.</summary>
internal sealed class ObserverSet(IReadOnlyList<ITrainingObserver> observers, ILogger logger)
{
    /// <summary>The first observer failure not yet acted on: the observer's type name and what it threw.</summary>
    public (string Observer, Exception Error)? Failure { get; private set; }

    /// <summary>Calls every observer; one that throws is logged and remembered (<see cref="TakeFailure"/>), and the others are still called.</summary>
    public async ValueTask NotifyAsync(Func<ITrainingObserver, ValueTask> call)
    {
        foreach (var observer in observers)
        {
            try
            {
                await call(observer).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                Log.ObserverFailed(logger, observer.GetType().Name, e);
                Failure ??= (observer.GetType().Name, e);
            }
        }
    }

    /// <summary>The remembered failure, cleared.</summary>
    public (string Observer, Exception Error)? TakeFailure()
    {
        var failure = Failure;
        Failure = null;
        return failure;
    }
}

/// <summary>Counts skipped steps in a row and stops training when there are too many.</summary>
internal sealed class ConsecutiveSkips(int limit)
{
    public int Current { get; private set; }

    public void Reset() => Current = 0;

    /// <summary>Counts a skipped step; throws <see cref="TrainingFailedException"/> at the limit (0: no limit).</summary>
    public void Count(long step, IReadOnlyList<string> images, string reason, string? lastCheckpoint)
    {
        Current++;
        if (limit > 0 && Current >= limit)
            throw new TrainingFailedException(step, images, $"{Current} steps in a row were skipped ({reason} at this one)", lastCheckpoint);
    }
}

/// <summary>Images per second over a sliding window of recent steps, and the time left at that rate.</summary>
internal sealed class Throughput
{
    private const int Window = 20;
    private readonly Queue<(int Images, TimeSpan Time)> _recent = new();

    public double ImagesPerSecond { get; private set; }

    public void Add(int images, TimeSpan time)
    {
        _recent.Enqueue((images, time));
        if (_recent.Count > Window)
            _recent.Dequeue();
        double seconds = _recent.Sum(r => r.Time.TotalSeconds);
        ImagesPerSecond = seconds > 0 ? _recent.Sum(r => r.Images) / seconds : 0;
    }

    public TimeSpan Remaining(long steps, int imagesPerStep) =>
        ImagesPerSecond > 0 ? TimeSpan.FromSeconds(steps * imagesPerStep / ImagesPerSecond) : TimeSpan.Zero;
}

/// <summary>Loss and learning rate as TensorBoard scalars (TorchSharp's SummaryWriter).</summary>
internal sealed class TensorBoardLog(string directory) : IDisposable
{
    private readonly TorchSharp.Modules.SummaryWriter _writer = TorchSharp.torch.utils.tensorboard.SummaryWriter(directory);

    public void Write(TrainingProgress progress)
    {
        int step = (int)Math.Min(progress.Step, int.MaxValue);
        _writer.add_scalar("train/loss", (float)progress.Loss, step);
        _writer.add_scalar("train/loss_smoothed", (float)progress.SmoothedLoss, step);
        _writer.add_scalar("train/learning_rate", (float)progress.LearningRate, step);
        _writer.add_scalar("train/data_wait_ms", (float)progress.DataWait.TotalMilliseconds, step);
        // Per optimizer group (0: the UNet's LoRA, 1: the text encoder's), and the step size the update used (Prodigy's
        // d x lr, Adafactor's own), as sd-scripts logs lr/<group> and lr/d*lr/<group>.
        for (int i = 0; i < progress.LearningRates.Count; i++)
            _writer.add_scalar($"train/learning_rate/group{i}", (float)progress.LearningRates[i], step);
        for (int i = 0; i < progress.EffectiveLearningRates.Count; i++)
            _writer.add_scalar($"train/effective_learning_rate/group{i}", (float)progress.EffectiveLearningRates[i], step);
    }

    public void Dispose()
    {
    }
}
