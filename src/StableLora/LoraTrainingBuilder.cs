using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Data;
using StableLora.Training;

namespace StableLora;

/// <summary>
/// Builds a <see cref="LoraTrainer"/>: LoRA training (diffusers' train_text_to_image_lora.py and kohya's options) as a fluent API. Every setting is a
/// <c>With*</c> method; <see cref="Build"/> checks them all and reports every problem at once. A builder builds once.
/// </summary>
/// <example>
/// <code>
/// var trainer = LoraTrainingBuilder.FromPretrained("runwayml/stable-diffusion-v1-5")
///     .WithDataset("sketches")
///     .WithCaption("a sketch")
///     .WithRank(4)
///     .WithMaxSteps(1000)
///     .WithMixedPrecision(MixedPrecision.Bf16)
///     .WithProgress(new Progress&lt;TrainingProgress&gt;(p => Console.WriteLine($"{p.Step}/{p.MaxSteps} loss {p.SmoothedLoss:F4}")))
///     .Build();
/// TrainingResult result = await trainer.TrainAsync();
/// </code>
/// </example>
public sealed class LoraTrainingBuilder
{
    private readonly List<ITrainingObserver> _observers = new();
    private LoraTrainingOptions _options;
    private IImageDataset? _dataset;
    private ILogger _logger = NullLogger.Instance;
    private IProgress<TrainingProgress>? _progress;
    private bool _built;
    private TrainingHooks? _hooks;
    private HubOptions _hub = new();

    private LoraTrainingBuilder(LoraTrainingOptions options)
    {
        _options = options;
    }

    /// <summary>The options as set so far (not yet checked; <see cref="Build"/> checks them).</summary>
    public LoraTrainingOptions Options => _options;

    /// <summary>Starts a builder for a base model: a diffusers folder, a single-file checkpoint (.safetensors/.ckpt), or a Hugging Face hub id (<c>org/name[@revision]</c>, from the local cache unless downloads are allowed with <see cref="WithHubOptions"/>).</summary>
    /// <param name="model">The base model.</param>
    public static LoraTrainingBuilder FromPretrained(string model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new LoraTrainingBuilder(new LoraTrainingOptions { Model = model });
    }

    /// <summary>Starts a builder from a complete options record (for example one loaded from a checkpoint's <c>options.json</c>).</summary>
    /// <param name="options">The options.</param>
    public static LoraTrainingBuilder FromOptions(LoraTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new LoraTrainingBuilder(options);
    }

    /// <summary>Train on the images of a folder (png, jpg, jpeg, webp, bmp, gif).</summary>
    /// <param name="directory">The folder.</param>
    public LoraTrainingBuilder WithDataset(string directory) => Set(o => o with { DataDirectory = directory });

    /// <summary>Train on images from any source.</summary>
    /// <param name="dataset">The images.</param>
    public LoraTrainingBuilder WithDataset(IImageDataset dataset)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        _dataset = dataset;
        return this;
    }

    /// <summary>The caption of every image (one caption for every image).</summary>
    /// <param name="caption">The caption; may be empty.</param>
    /// <param name="useCaptionFiles">Prefer an <c>image.txt</c> beside an image as its caption (kohya convention); null leaves the setting as it is.</param>
    public LoraTrainingBuilder WithCaption(string caption, bool? useCaptionFiles = null) =>
        Set(o => o with { Caption = caption, UseCaptionFiles = useCaptionFiles ?? o.UseCaptionFiles });

    /// <summary>The LoRA rank.</summary>
    /// <param name="rank">At least 1.</param>
    public LoraTrainingBuilder WithRank(int rank) => Set(o => o with { Rank = rank });

    /// <summary>The LoRA alpha (scale = alpha / rank); without it alpha = rank (scale 1).</summary>
    /// <param name="alpha">A positive number.</param>
    public LoraTrainingBuilder WithAlpha(double alpha) => Set(o => o with { Alpha = alpha });

    /// <summary>Which projections and attentions get LoRA layers, and their dropout.</summary>
    /// <param name="targets">Projections (default: all four).</param>
    /// <param name="attentionKinds">Self-, cross- or all attentions (default: all).</param>
    /// <param name="dropout">Dropout on the layers' input while training.</param>
    public LoraTrainingBuilder WithLoraTargets(LoraTargets targets, LoraAttentionKinds attentionKinds = LoraAttentionKinds.All, double dropout = 0) =>
        Set(o => o with { Targets = targets, AttentionKinds = attentionKinds, LoraDropout = dropout });

    /// <summary>Which UNet layers the LoRA adapts: diffusers' attention projections or kohya's Transformer2DModel layers.</summary>
    /// <param name="preset">The preset.</param>
    public LoraTrainingBuilder WithPreset(LoraPreset preset) => Set(o => o with { Preset = preset });

    /// <summary>Adapts the UNet layers whose module paths match any of these globs instead of a preset's (see <see cref="LoraTrainingOptions.TargetPatterns"/>).</summary>
    /// <param name="patterns">Module-path globs, e.g. <c>*.attn2.to_k</c>.</param>
    public LoraTrainingBuilder WithTargetPatterns(params string[] patterns) => Set(o => o with { TargetPatterns = patterns.ToArray() });

    /// <summary>LoCon: adapts the UNet's resnet, downsample and upsample convolutions too (kohya's <c>conv_dim</c> / <c>conv_alpha</c>).</summary>
    /// <param name="rank">The rank of the 3x3 convolutions.</param>
    /// <param name="alpha">Their alpha; null: the rank.</param>
    public LoraTrainingBuilder WithConvRank(int rank, double? alpha = null) => Set(o => o with { ConvRank = rank, ConvAlpha = alpha });

    /// <summary>Trains LoRA on the text encoder too, with its own rank, alpha and learning rate (kohya's <c>text_encoder_lr</c>).</summary>
    /// <param name="rank">Its rank; null: the network rank.</param>
    /// <param name="alpha">Its alpha; null: the network alpha when <paramref name="rank"/> is null, else its rank.</param>
    /// <param name="learningRate">Its peak learning rate; null: the run's learning rate.</param>
    public LoraTrainingBuilder WithTextEncoderLora(int? rank = null, double? alpha = null, double? learningRate = null) =>
        Set(o => o with { TrainTextEncoder = true, TextEncoderRank = rank, TextEncoderAlpha = alpha, TextEncoderLearningRate = learningRate });

    /// <summary>The UNet LoRA's peak learning rate when it differs from the run's (kohya's <c>unet_lr</c>).</summary>
    /// <param name="learningRate">The learning rate.</param>
    public LoraTrainingBuilder WithUnetLearningRate(double learningRate) => Set(o => o with { UnetLearningRate = learningRate });

    /// <summary>kohya's LoRA dropouts while training.</summary>
    /// <param name="network">Dropout on the down projection's output (<c>network_dropout</c>).</param>
    /// <param name="rank">Per-sample dropout of whole ranks (<c>rank_dropout</c>).</param>
    /// <param name="module">Probability of skipping a whole module for a step (<c>module_dropout</c>).</param>
    public LoraTrainingBuilder WithLoraDropouts(double network = 0, double rank = 0, double module = 0) =>
        Set(o => o with { NetworkDropout = network, RankDropout = rank, ModuleDropout = module });

    /// <summary>The training image size (square, a multiple of 8).</summary>
    /// <param name="pixels">The side in pixels.</param>
    /// <param name="randomCrop">Crop at random positions instead of the centre; null leaves the setting as it is.</param>
    /// <param name="randomFlip">Mirror images at random; null leaves the setting as it is.</param>
    public LoraTrainingBuilder WithResolution(int pixels, bool? randomCrop = null, bool? randomFlip = null) =>
        Set(o => o with { Resolution = pixels, RandomCrop = randomCrop ?? o.RandomCrop, RandomFlip = randomFlip ?? o.RandomFlip });

    /// <summary>Images per micro-batch.</summary>
    /// <param name="batchSize">At least 1.</param>
    public LoraTrainingBuilder WithBatchSize(int batchSize) => Set(o => o with { BatchSize = batchSize });

    /// <summary>The peak learning rate.</summary>
    /// <param name="learningRate">A positive number.</param>
    public LoraTrainingBuilder WithLearningRate(double learningRate) => Set(o => o with { LearningRate = learningRate });

    /// <summary>
    /// The optimizer (sd-scripts' <c>optimizer_type</c>) and its arguments (sd-scripts' <c>optimizer_args</c>, as
    /// <c>key=value</c> strings such as <c>"decouple=True"</c> or <c>"betas=0.9,0.99"</c>); checked by <see cref="Build"/>.
    /// </summary>
    /// <param name="optimizer">The optimizer.</param>
    /// <param name="arguments">Its arguments as <c>key=value</c>; none: its defaults.</param>
    /// <exception cref="FormatException">An argument is not <c>key=value</c>.</exception>
    public LoraTrainingBuilder WithOptimizer(OptimizerType optimizer, params string[] arguments) =>
        WithOptimizer(optimizer, OptimizerChoice.ParsePairs(arguments));

    /// <summary>The optimizer and its arguments as key to value (see <see cref="LoraTrainingOptions.OptimizerArguments"/>); checked by <see cref="Build"/>.</summary>
    /// <param name="optimizer">The optimizer.</param>
    /// <param name="arguments">Its arguments.</param>
    public LoraTrainingBuilder WithOptimizer(OptimizerType optimizer, IReadOnlyDictionary<string, string> arguments)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var copy = new Dictionary<string, string>(arguments, StringComparer.Ordinal);
        return Set(o => o with { Optimizer = optimizer, OptimizerArguments = copy });
    }

    /// <summary>How many optimizer steps to train for.</summary>
    /// <param name="maxSteps">At least 1.</param>
    public LoraTrainingBuilder WithMaxSteps(int maxSteps) => Set(o => o with { MaxSteps = maxSteps });

    /// <summary>Linear warm-up steps of the learning-rate schedule (replaces a warm-up ratio set before).</summary>
    /// <param name="warmupSteps">0 to MaxSteps.</param>
    public LoraTrainingBuilder WithWarmupSteps(int warmupSteps) => Set(o => o with { WarmupSteps = warmupSteps, WarmupRatio = null });

    /// <summary>
    /// Warm-up as a fraction of the run: int(ratio x MaxSteps) steps, as kohya's sd-scripts reads an <c>lr_warmup_steps</c>
    /// below 1 (replaces warm-up steps set before). Not for the constant schedule, which has no warm-up.
    /// </summary>
    /// <param name="ratio">In [0, 1], e.g. 0.05.</param>
    public LoraTrainingBuilder WithWarmupRatio(double ratio) => Set(o => o with { WarmupRatio = ratio });

    /// <summary>
    /// The learning-rate schedule, with diffusers' <c>get_scheduler</c> names and arithmetic (see <see cref="LearningRateSchedule"/>);
    /// every parameter group's peak learning rate is multiplied by it. The default is <see cref="LearningRateSchedule.Cosine"/>.
    /// </summary>
    /// <param name="schedule">The schedule.</param>
    /// <param name="cycles">The hard restarts of <see cref="LearningRateSchedule.CosineWithRestarts"/> (diffusers' <c>num_cycles</c>); null: 1. Only for that schedule.</param>
    /// <param name="power">The power of <see cref="LearningRateSchedule.Polynomial"/>; null: 1. Only for that schedule.</param>
    /// <param name="endLearningRate">
    /// The learning rate <see cref="LearningRateSchedule.Polynomial"/> ends at (diffusers' <c>lr_end</c>; null: 1e-7), below the run's
    /// learning rate; a parameter group with another peak ends at its peak x end / learning rate, as in diffusers. Only for that schedule.
    /// </param>
    public LoraTrainingBuilder WithLearningRateSchedule(LearningRateSchedule schedule, int? cycles = null, double? power = null, double? endLearningRate = null) =>
        Set(o => o with { LearningRateSchedule = schedule, LearningRateCycles = cycles, LearningRatePower = power, LearningRateEnd = endLearningRate });

    /// <summary>Write a checkpoint every this many steps.</summary>
    /// <param name="steps">0: only at the end.</param>
    /// <param name="keepLast">Keep only this many newest checkpoints; null keeps all.</param>
    public LoraTrainingBuilder WithCheckpointEvery(int steps, int? keepLast = null) =>
        Set(o => o with { CheckpointEvery = steps, KeepLastCheckpoints = keepLast });

    /// <summary>The precision of the frozen models.</summary>
    /// <param name="precision">No, Fp16 or Bf16.</param>
    /// <param name="vaeInFloat32">Keep the VAE in float32 under Fp16 (recommended: SD's VAE overflows in fp16); null leaves the setting as it is (on by default).</param>
    public LoraTrainingBuilder WithMixedPrecision(MixedPrecision precision, bool? vaeInFloat32 = null) =>
        Set(o => o with { MixedPrecision = precision, VaeInFloat32 = vaeInFloat32 ?? o.VaeInFloat32 });

    /// <summary>Where checkpoints and the final LoRA go.</summary>
    /// <param name="directory">The output folder (created if missing).</param>
    public LoraTrainingBuilder WithOutputDirectory(string directory) => Set(o => o with { OutputDirectory = directory });

    /// <summary>The device: "auto", "cpu", "cuda" or "cuda:N".</summary>
    /// <param name="device">The device name.</param>
    public LoraTrainingBuilder WithDevice(string device) => Set(o => o with { Device = device });

    /// <summary>The seed of every random draw.</summary>
    /// <param name="seed">Any 64-bit value.</param>
    public LoraTrainingBuilder WithSeed(ulong seed) => Set(o => o with { Seed = seed });

    /// <summary>Sum gradients over this many micro-batches per optimizer step.</summary>
    /// <param name="steps">At least 1.</param>
    public LoraTrainingBuilder WithGradientAccumulation(int steps) => Set(o => o with { GradientAccumulationSteps = steps });

    /// <summary>Clip the total gradient norm.</summary>
    /// <param name="maxNorm">0 turns clipping off.</param>
    public LoraTrainingBuilder WithMaxGradNorm(double maxNorm) => Set(o => o with { MaxGradNorm = maxNorm });

    /// <summary>kohya's noise offset.</summary>
    /// <param name="offset">0 turns it off.</param>
    public LoraTrainingBuilder WithNoiseOffset(double offset) => Set(o => o with { NoiseOffset = offset });

    /// <summary>Min-SNR-gamma loss weighting (5 is the usual value).</summary>
    /// <param name="gamma">A positive number.</param>
    public LoraTrainingBuilder WithMinSnrGamma(double gamma) => Set(o => o with { MinSnrGamma = gamma });

    /// <summary>
    /// The per-element loss, as sd-scripts' <c>loss_type</c> (see <see cref="LossType"/>); the default is <see cref="LossType.L2"/>,
    /// the plain MSE.
    /// </summary>
    /// <param name="type">L2, L1, Huber or SmoothL1.</param>
    /// <param name="huberC">sd-scripts' <c>huber_c</c> (null: 0.1). Only for Huber and SmoothL1.</param>
    /// <param name="huberSchedule">How the Huber threshold follows the timestep (null: <see cref="HuberSchedule.Snr"/>, sd-scripts' default). Only for Huber and SmoothL1.</param>
    public LoraTrainingBuilder WithLossType(LossType type, double? huberC = null, HuberSchedule? huberSchedule = null) =>
        Set(o => o with { LossType = type, HuberC = huberC, HuberSchedule = huberSchedule });

    /// <summary>sd-scripts' debiased estimation loss: each sample's loss x 1 / sqrt(SNR) (1 / (SNR + 1) for v-prediction models).</summary>
    public LoraTrainingBuilder WithDebiasedEstimation() => Set(o => o with { DebiasedEstimation = true });

    /// <summary>sd-scripts' input perturbation noise: the UNet's input is noised with noise + gamma x N(0, 1); the target stays the noise.</summary>
    /// <param name="gamma">A positive number; 0.1 is the usual value.</param>
    public LoraTrainingBuilder WithIpNoiseGamma(double gamma) => Set(o => o with { IpNoiseGamma = gamma });

    /// <summary>sd-scripts' zero terminal SNR: rescale the noise schedule so that its last timestep is pure noise. Only for v-prediction models.</summary>
    public LoraTrainingBuilder WithZeroTerminalSnr() => Set(o => o with { ZeroTerminalSnr = true });

    /// <summary>sd-scripts' <c>v_pred_like_loss</c>: adds this x the loss scaled as a v-prediction loss would be.</summary>
    /// <param name="weight">A positive number.</param>
    public LoraTrainingBuilder WithVPredLikeLoss(double weight) => Set(o => o with { VPredLikeLoss = weight });

    /// <summary>
    /// sd-scripts' <c>max_token_length</c>: captions of up to 150 or 225 tokens, encoded in 75-token chunks (see
    /// <see cref="LoraTrainingOptions.MaxTokenLength"/>).
    /// </summary>
    /// <param name="tokens">75 (the default), 150 or 225.</param>
    public LoraTrainingBuilder WithMaxTokenLength(int tokens) => Set(o => o with { MaxTokenLength = tokens });

    /// <summary>
    /// sd-scripts' <c>clip_skip</c>: condition on the output of the n-th text-encoder layer from the end, through the
    /// final LayerNorm (see <see cref="LoraTrainingOptions.ClipSkip"/>).
    /// </summary>
    /// <param name="clipSkip">1 (the last layer, the default), 2 (the penultimate layer, usual for anime models), ...</param>
    public LoraTrainingBuilder WithClipSkip(int clipSkip) => Set(o => o with { ClipSkip = clipSkip });

    /// <summary>Encode each image to latents once and reuse them (no random crop).</summary>
    public LoraTrainingBuilder WithLatentCaching() => Set(o => o with { CacheLatents = true });

    /// <summary>Cache latents on disk for later runs too (<c>--cache_latents_to_disk</c>; see <see cref="LoraTrainingOptions.CacheLatentsToDisk"/>).</summary>
    /// <param name="directory">The cache folder; null: beside each image.</param>
    public LoraTrainingBuilder WithLatentCachingToDisk(string? directory = null) => Set(o => o with { CacheLatentsToDisk = true, LatentCacheDirectory = directory });

    /// <summary>Recompute UNet activations during backward to save memory (see <see cref="LoraTrainingOptions.GradientCheckpointing"/>).</summary>
    public LoraTrainingBuilder WithGradientCheckpointing() => Set(o => o with { GradientCheckpointing = true });

    /// <summary>Skip images that cannot be read instead of failing, with a warning naming each.</summary>
    public LoraTrainingBuilder WithSkippingUnreadableImages() => Set(o => o with { SkipUnreadableImages = true });

    /// <summary>What to do when a step's loss is not finite.</summary>
    /// <param name="policy">Skip the step (default) or stop.</param>
    public LoraTrainingBuilder WithNonFiniteLossPolicy(NonFiniteLossPolicy policy) => Set(o => o with { OnNonFiniteLoss = policy });

    /// <summary>Stop after this many skipped steps in a row (non-finite loss or gradients); 0: never (see <see cref="LoraTrainingOptions.MaxConsecutiveSkippedSteps"/>).</summary>
    public LoraTrainingBuilder WithMaxConsecutiveSkippedSteps(int steps) => Set(o => o with { MaxConsecutiveSkippedSteps = steps });

    /// <summary>Render a validation prompt with the current LoRA every <paramref name="everySteps"/> steps.</summary>
    /// <param name="prompt">The prompt.</param>
    /// <param name="everySteps">Steps between renders; 0 renders at checkpoints.</param>
    public LoraTrainingBuilder WithValidationPrompt(string prompt, int everySteps = 0) =>
        Set(o => o with { ValidationPrompt = prompt, ValidationEvery = everySteps });

    /// <summary>Write TensorBoard scalars under <paramref name="directory"/>.</summary>
    /// <param name="directory">The log folder.</param>
    public LoraTrainingBuilder WithTensorBoard(string directory) => Set(o => o with { TensorBoardDirectory = directory });

    /// <summary>Resume from a checkpoint folder, or "latest" for the newest in the output folder.</summary>
    /// <param name="checkpoint">A checkpoint folder or "latest".</param>
    public LoraTrainingBuilder WithResume(string checkpoint) => Set(o => o with { ResumeFrom = checkpoint });

    /// <summary>Replaces any option with a function of the current options (for settings without a dedicated method).</summary>
    /// <param name="change">Returns the changed options.</param>
    public LoraTrainingBuilder WithOptions(Func<LoraTrainingOptions, LoraTrainingOptions> change)
    {
        ArgumentNullException.ThrowIfNull(change);
        return Set(change);
    }

    /// <summary>How a hub id is resolved: the cache folder, whether missing files may be downloaded, offline mode, the token (not saved in checkpoints).</summary>
    /// <param name="options">The hub options (unset values come from the HF_* environment variables).</param>
    public LoraTrainingBuilder WithHubOptions(HubOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (_built)
            throw new InvalidOperationException("this builder has already built a trainer; start a new one");
        _hub = options;
        return this;
    }

    /// <summary>How a single-file base model is read: a config folder or original LDM yaml, EMA weights.</summary>
    /// <param name="options">The single-file options.</param>
    public LoraTrainingBuilder WithSingleFileOptions(SingleFileOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return Set(o => o with { SingleFile = options });
    }

    /// <summary>Where the run logs (nothing by default).</summary>
    /// <param name="logger">The logger.</param>
    public LoraTrainingBuilder WithLogger(ILogger logger)
    {
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        return this;
    }

    /// <summary>Receives a <see cref="TrainingProgress"/> after every step.</summary>
    /// <param name="progress">The receiver (a <see cref="Progress{T}"/> marshals to its thread).</param>
    public LoraTrainingBuilder WithProgress(IProgress<TrainingProgress> progress)
    {
        _progress = progress ?? throw new ArgumentNullException(nameof(progress));
        return this;
    }

    /// <summary>Adds an observer (start, steps, checkpoints, validation images, end, failure); several may be added.</summary>
    /// <param name="observer">The observer.</param>
    public LoraTrainingBuilder WithObserver(ITrainingObserver observer)
    {
        ArgumentNullException.ThrowIfNull(observer);
        _observers.Add(observer);
        return this;
    }

    internal LoraTrainingBuilder WithHooks(TrainingHooks hooks)
    {
        _hooks = hooks;
        return this;
    }

    /// <summary>Checks every option and returns the trainer.</summary>
    /// <exception cref="InvalidOptionsException">One or more options are invalid; every problem is listed, naming the option and value.</exception>
    /// <exception cref="InvalidOperationException">The builder was already built.</exception>
    public LoraTrainer Build()
    {
        if (_built)
            throw new InvalidOperationException("this builder has already built a trainer; start a new one");
        var errors = _options.Validate(_dataset is not null);
        if (errors.Count > 0)
            throw new InvalidOptionsException(errors);
        _built = true;
        return new LoraTrainer(_options, new TrainingRun(_options, _dataset, _logger, _progress, _observers.ToArray(), _hooks, _hub));
    }

    // Datasets (issue 14): buckets, captions, repeats and epochs, as sd-scripts names them.

    /// <summary>Aspect-ratio bucketing as sd-scripts' <c>--enable_bucket</c>: each image to the bucket of the closest aspect ratio (area up to resolution²), resized to cover it and cropped; every batch from one bucket.</summary>
    /// <param name="minBucketReso">The smallest bucket side (<c>--min_bucket_reso</c>); null: 256, or half the resolution when smaller.</param>
    /// <param name="maxBucketReso">The largest bucket side (<c>--max_bucket_reso</c>); null: 1024, or the resolution when larger.</param>
    /// <param name="bucketResoSteps">The step between sides, a multiple of 8 (<c>--bucket_reso_steps</c>).</param>
    /// <param name="noUpscale">Buckets from the images' own sizes, never enlarging (<c>--bucket_no_upscale</c>).</param>
    public LoraTrainingBuilder WithBuckets(int? minBucketReso = null, int? maxBucketReso = null, int bucketResoSteps = 64, bool noUpscale = false) =>
        Set(o => o with { EnableBucket = true, MinBucketReso = minBucketReso, MaxBucketReso = maxBucketReso, BucketResoSteps = bucketResoSteps, BucketNoUpscale = noUpscale });

    /// <summary>The caption files' extension (<c>--caption_extension</c>); also turns caption files on for a plain image folder.</summary>
    /// <param name="extension">.txt (the default) or .caption, for example; a missing dot is added.</param>
    public LoraTrainingBuilder WithCaptionExtension(string extension) => Set(o => o with { CaptionExtension = extension, UseCaptionFiles = true });

    /// <summary>Shuffle each caption's comma-separated tags (<c>--shuffle_caption</c>), keeping some in place.</summary>
    /// <param name="keepTokens">Leading tags kept in place (<c>--keep_tokens</c>).</param>
    /// <param name="keepTokensSeparator">Tags before it stay first, those after a second one stay last (<c>--keep_tokens_separator</c>, e.g. "|||").</param>
    public LoraTrainingBuilder WithCaptionShuffle(int keepTokens = 0, string? keepTokensSeparator = null) =>
        Set(o => o with { ShuffleCaption = true, KeepTokens = keepTokens, KeepTokensSeparator = keepTokensSeparator });

    /// <summary>kohya's caption dropout: whole captions, single tags, or every n-th epoch.</summary>
    /// <param name="rate">Probability of the empty caption (<c>--caption_dropout_rate</c>).</param>
    /// <param name="tagRate">Probability of leaving out each movable tag (<c>--caption_tag_dropout_rate</c>).</param>
    /// <param name="everyNEpochs">Empty captions every n-th epoch (<c>--caption_dropout_every_n_epochs</c>); 0: never.</param>
    public LoraTrainingBuilder WithCaptionDropout(double rate = 0, double tagRate = 0, int everyNEpochs = 0) =>
        Set(o => o with { CaptionDropoutRate = rate, CaptionTagDropoutRate = tagRate, CaptionDropoutEveryNEpochs = everyNEpochs });

    /// <summary>Text put before and after every caption, each with a space (<c>--caption_prefix</c>, <c>--caption_suffix</c>).</summary>
    /// <param name="prefix">Before the caption; null: none.</param>
    /// <param name="suffix">After the caption; null: none.</param>
    public LoraTrainingBuilder WithCaptionAffixes(string? prefix, string? suffix) => Set(o => o with { CaptionPrefix = prefix, CaptionSuffix = suffix });

    /// <summary>Train this many epochs (<c>--max_train_epochs</c>): MaxSteps becomes epochs x ceil(batches per epoch / gradient accumulation), an epoch being every image times its folder's repeats.</summary>
    /// <param name="maxEpochs">At least 1.</param>
    public LoraTrainingBuilder WithMaxEpochs(int maxEpochs) => Set(o => o with { MaxEpochs = maxEpochs });

    /// <summary>
    /// Keep an exponential moving average of the LoRA weights (diffusers' EMAModel; OneTrainer's and SimpleTuner's EMA) and
    /// write it as <c>lora_kohya-ema.safetensors</c> beside the trained weights' files.
    /// </summary>
    /// <param name="decay">The largest decay, between 0 and 1 (e.g. 0.999).</param>
    /// <param name="updateEvery">Update it every this many optimizer steps.</param>
    /// <param name="warmup">diffusers' <c>use_ema_warmup</c> decay curve.</param>
    /// <param name="emaFilesOnly">Write only the EMA files.</param>
    public LoraTrainingBuilder WithLoraEma(double decay, int updateEvery = 1, bool warmup = false, bool emaFilesOnly = false) =>
        Set(o => o with { LoraEmaDecay = decay, LoraEmaUpdateEvery = updateEvery, LoraEmaWarmup = warmup, LoraEmaOnly = emaFilesOnly });

    /// <summary>Also save a checkpoint at the end of every n-th epoch (<c>--save_every_n_epochs</c>).</summary>
    /// <param name="epochs">At least 1.</param>
    public LoraTrainingBuilder WithCheckpointEveryNEpochs(int epochs) => Set(o => o with { SaveEveryNEpochs = epochs });

    /// <summary>
    /// Reads sd-scripts' dataset config (<c>--dataset_config</c>: TOML, or the same structure in JSON) into these
    /// options: <c>[general]</c>, one <c>[[datasets]]</c> (resolution, batch size, buckets) and its
    /// <c>[[datasets.subsets]]</c> (image_dir, num_repeats, class_tokens, is_reg, caption and augmentation settings).
    /// Relative folders are taken from the file's folder. Later builder calls override what it sets.
    /// </summary>
    /// <param name="path">The <c>.toml</c> or <c>.json</c> file.</param>
    /// <exception cref="InvalidOptionsException">The file cannot be read, or a key or value is wrong (each named with the file).</exception>
    public LoraTrainingBuilder WithDatasetConfig(string path) => Set(o => Configuration.DatasetConfigFile.Apply(o, path));

    /// <summary>DreamBooth-style prior preservation (<c>--reg_data_dir</c>, <c>--prior_loss_weight</c>): class images mixed into every epoch, their loss weighted.</summary>
    /// <param name="directory">The regularisation images: <c>&lt;repeats&gt;_&lt;class&gt;</c> sub-folders or a plain folder.</param>
    /// <param name="priorLossWeight">Their loss weight (training images weigh 1).</param>
    public LoraTrainingBuilder WithRegularizationImages(string directory, double priorLossWeight = 1.0) =>
        Set(o => o with { RegularizationDirectory = directory, PriorLossWeight = priorLossWeight });

    /// <summary>Weight the loss per pixel by a mask (<c>--masked_loss</c>): the images' alpha channels (<c>--alpha_mask</c>), or masks from a folder.</summary>
    /// <param name="maskDirectory">A folder with one mask per image (same file name, any image extension; red channel = weight); null: alpha channels.</param>
    public LoraTrainingBuilder WithMaskedLoss(string? maskDirectory = null) => Set(o => o with { MaskedLoss = true, MaskDirectory = maskDirectory });

    private LoraTrainingBuilder Set(Func<LoraTrainingOptions, LoraTrainingOptions> change)
    {
        if (_built)
            throw new InvalidOperationException("this builder has already built a trainer; start a new one");
        _options = change(_options);
        return this;
    }
}

/// <summary>A configured LoRA training run. Create it with <see cref="LoraTrainingBuilder"/>.</summary>
public sealed class LoraTrainer
{
    private readonly TrainingRun _run;
    private int _started;

    internal LoraTrainer(LoraTrainingOptions options, TrainingRun run)
    {
        Options = options;
        _run = run;
    }

    /// <summary>The options this trainer runs with.</summary>
    public LoraTrainingOptions Options { get; }

    /// <summary>
    /// Trains on a background thread until <see cref="LoraTrainingOptions.MaxSteps"/> or cancellation. Cancellation is
    /// honoured after the current step: a resumable checkpoint is saved, the result says it was cancelled and names the
    /// checkpoint's LoRA files, and the final LoRA files are not written (files an earlier run left stay as they were).
    /// A token that is already cancelled gives a cancelled task before anything is loaded or written.
    /// </summary>
    /// <param name="cancellationToken">Stops training after the current step.</param>
    /// <exception cref="OperationCanceledException">The token was cancelled before training started.</exception>
    /// <exception cref="InvalidOperationException">The trainer was already started.</exception>
    /// <exception cref="InvalidModelFileException">The model or a checkpoint cannot be loaded.</exception>
    /// <exception cref="TrainingFailedException">A step failed (non-finite loss with the Stop policy).</exception>
    public Task<TrainingResult> TrainAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _started, 1) == 1)
            throw new InvalidOperationException("this trainer has already been started");
        if (cancellationToken.IsCancellationRequested)
            return Task.FromCanceled<TrainingResult>(cancellationToken);
        return Task.Run(() => _run.RunAsync(cancellationToken), CancellationToken.None);
    }
}
