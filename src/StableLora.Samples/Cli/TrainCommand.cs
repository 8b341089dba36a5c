using System.CommandLine;
using Microsoft.Extensions.Logging;

namespace StableLora.Samples.Cli;

/// <summary><c>stablelora train</c>: LoRA training through the public builder.</summary>
internal sealed class TrainCommand
{
    private readonly Option<string?> _model = Parsing.Option<string?>("--model", "Base model: a diffusers folder, a single-file checkpoint or a hub id org/name[@revision] (omit with --data for the built-in demo)");
    private readonly ModelSourceFlags _modelSource = new();
    private readonly Option<string?> _data = Parsing.Option<string?>("--data", "Folder of training images");
    private readonly Option<string?> _caption = Parsing.Option<string?>("--caption", "Caption of every image (default \"a sketch\")");
    private readonly Option<bool> _captionFiles = Parsing.Option<bool>("--caption-files", "Use image.txt beside image.png as its caption when present");
    private readonly Option<string> _output = new("--output") { Description = "Output folder", DefaultValueFactory = _ => "output" };
    private readonly Option<int?> _resolution = Parsing.Option<int?>("--resolution", "Training image size in pixels (default 512)");
    private readonly Option<int?> _batchSize = Parsing.Option<int?>("--batch-size", "Images per batch (default 1)");
    private readonly Option<double?> _learningRate = Parsing.Option<double?>("--lr", "Peak learning rate (default 1e-4)");
    private readonly Option<string?> _optimizer = Parsing.Option<string?>("--optimizer",
        "Optimizer (sd-scripts' --optimizer_type): adamw (default), prodigy, adafactor, lion or sgd (SGD with Nesterov momentum)");
    private readonly Option<string[]> _optimizerArgs = new("--optimizer-args")
    {
        Description = "Optimizer arguments as key=value (sd-scripts' --optimizer_args), e.g. decouple=True weight_decay=0.01 betas=0.9,0.99",
        AllowMultipleArgumentsPerToken = true,
    };
    private readonly Option<double?> _loraEmaDecay = Parsing.Option<double?>("--lora-ema-decay", "Keep an EMA of the LoRA weights with this decay (e.g. 0.999) and write lora_kohya-ema.safetensors too");
    private readonly Option<int?> _loraEmaEvery = Parsing.Option<int?>("--lora-ema-every", "Update the EMA every n optimizer steps (default 1)");
    private readonly Option<bool> _loraEmaWarmup = Parsing.Option<bool>("--lora-ema-warmup", "diffusers' EMA warm-up: decay 1 - (1 + step)^(-2/3), up to --lora-ema-decay");
    private readonly Option<bool> _loraEmaOnly = Parsing.Option<bool>("--lora-ema-only", "Write only the EMA's LoRA files");
    private readonly Option<int?> _maxSteps = Parsing.Option<int?>("--max-steps", "Optimizer steps (default 1000)");
    private readonly Option<int?> _warmupSteps = Parsing.Option<int?>("--warmup-steps", "Warm-up steps of the learning-rate schedule (default 100)");
    private readonly Option<string?> _lrScheduler = Parsing.Option<string?>("--lr-scheduler",
        "Learning-rate schedule (diffusers' names): constant, constant_with_warmup, linear, cosine (default), cosine_with_restarts or polynomial");
    private readonly Option<double?> _lrWarmupRatio = Parsing.Option<double?>("--lr-warmup-ratio", "Warm-up as a fraction of --max-steps, in [0, 1] (instead of --warmup-steps)");
    private readonly Option<int?> _lrCycles = Parsing.Option<int?>("--lr-cycles", "Hard restarts of cosine_with_restarts (default 1)");
    private readonly Option<double?> _lrPower = Parsing.Option<double?>("--lr-power", "Power of the polynomial schedule (default 1)");
    private readonly Option<double?> _lrEnd = Parsing.Option<double?>("--lr-end", "Learning rate the polynomial schedule ends at, below --lr (default 1e-7)");
    private readonly Option<string?> _lossType = Parsing.Option<string?>("--loss-type", "Loss (sd-scripts' loss_type): l2 (default), l1, huber or smooth_l1");
    private readonly Option<double?> _huberC = Parsing.Option<double?>("--huber-c", "Huber threshold of huber and smooth_l1 (default 0.1)");
    private readonly Option<string?> _huberSchedule = Parsing.Option<string?>("--huber-schedule", "How the Huber threshold follows the timestep: constant, exponential or snr (default)");
    private readonly Option<bool> _debiasedEstimation = Parsing.Option<bool>("--debiased-estimation", "sd-scripts' debiased estimation loss weighting");
    private readonly Option<double?> _ipNoiseGamma = Parsing.Option<double?>("--ip-noise-gamma", "Input perturbation noise strength (e.g. 0.1)");
    private readonly Option<bool> _zeroTerminalSnr = Parsing.Option<bool>("--zero-terminal-snr", "Rescale the noise schedule to zero terminal SNR (v-prediction models only)");
    private readonly Option<double?> _vPredLikeLoss = Parsing.Option<double?>("--v-pred-like-loss", "Add this x a v-prediction-like loss (sd-scripts' v_pred_like_loss)");
    private readonly Option<int?> _rank = Parsing.Option<int?>("--rank", "LoRA rank (default 4)");
    private readonly Option<double?> _alpha = Parsing.Option<double?>("--alpha", "LoRA alpha (default: the rank)");
    private readonly Option<string?> _targets = Parsing.Option<string?>("--targets", "Adapted UNet layers: attention (default: q, k, v and out of every attention), kohya (every Transformer2DModel layer) or comma-separated module-path globs");
    private readonly Option<int?> _convRank = Parsing.Option<int?>("--conv-rank", "LoCon: also adapt the resnet/down/upsample convolutions, 3x3 ones at this rank");
    private readonly Option<double?> _convAlpha = Parsing.Option<double?>("--conv-alpha", "Alpha of the 3x3 convolutions (default: the conv rank)");
    private readonly Option<bool> _trainTextEncoder = Parsing.Option<bool>("--train-text-encoder", "Train LoRA on the text encoder too");
    private readonly Option<double?> _textEncoderLearningRate = Parsing.Option<double?>("--text-encoder-lr", "Text encoder LoRA learning rate (default: --lr)");
    private readonly Option<double?> _unetLearningRate = Parsing.Option<double?>("--unet-lr", "UNet LoRA learning rate (default: --lr)");
    private readonly Option<int?> _checkpointEvery = Parsing.Option<int?>("--checkpoint-every", "Steps between checkpoints (default 500; 0 only at the end)");
    private readonly Option<int?> _keepCheckpoints = Parsing.Option<int?>("--keep-checkpoints", "Keep only the newest N checkpoints");
    private readonly Option<string?> _mixedPrecision = Parsing.Option<string?>("--mixed-precision", "no, fp16 or bf16 (default no)");
    private readonly Option<string?> _device = Parsing.Option<string?>("--device", "auto, cpu, cuda or cuda:N (default auto)");
    private readonly Option<ulong?> _seed = Parsing.Option<ulong?>("--seed", "Random seed (default 42)");
    private readonly Option<string?> _resume = Parsing.Option<string?>("--resume", "Resume from 'latest' or a checkpoint folder");
    private readonly Option<string?> _validationPrompt = Parsing.Option<string?>("--validation-prompt", "Render this prompt with the current LoRA at checkpoints");
    private readonly Option<int?> _validationEvery = Parsing.Option<int?>("--validation-every", "Steps between validation renders (default: at checkpoints)");
    private readonly Option<int?> _accumulation = Parsing.Option<int?>("--gradient-accumulation", "Micro-batches per optimizer step (default 1)");
    private readonly Option<double?> _maxGradNorm = Parsing.Option<double?>("--max-grad-norm", "Gradient clipping norm (default 1; 0 off)");
    private readonly Option<double?> _noiseOffset = Parsing.Option<double?>("--noise-offset", "kohya noise offset (default 0)");
    private readonly Option<double?> _minSnrGamma = Parsing.Option<double?>("--min-snr-gamma", "Min-SNR-gamma loss weighting (e.g. 5)");
    private readonly Option<int?> _maxTokenLength = Parsing.Option<int?>("--max-token-length", "Caption tokens the text encoder sees: 75 (default), 150 or 225 (sd-scripts' --max_token_length)");
    private readonly Option<int?> _clipSkip = Parsing.Option<int?>("--clip-skip", "Text-encoder layer from the end: 1 last (default), 2 penultimate (sd-scripts' --clip_skip, A1111's Clip skip)");
    private readonly Option<bool> _randomCrop = Parsing.Option<bool>("--random-crop", "Crop at random positions");
    private readonly Option<bool> _randomFlip = Parsing.Option<bool>("--random-flip", "Mirror images at random");
    private readonly Option<bool> _skipBadImages = Parsing.Option<bool>("--skip-bad-images", "Skip unreadable images with a warning");
    private readonly Option<bool> _cacheLatents = Parsing.Option<bool>("--cache-latents", "Encode each image once");
    private readonly Option<bool> _gradientCheckpointing = Parsing.Option<bool>("--gradient-checkpointing", "Recompute UNet activations in backward: less memory, about 30% more time");
    private readonly Option<string?> _onNonFinite = Parsing.Option<string?>("--on-non-finite", "A step with a NaN or infinite loss or gradient: skip (default) or stop");
    private readonly Option<int?> _maxSkippedSteps = Parsing.Option<int?>("--max-skipped-steps", "Stop after this many skipped steps in a row (default 10; 0 never)");
    private readonly Option<string?> _tensorBoard = Parsing.Option<string?>("--tensorboard", "Write TensorBoard scalars to this folder");

    // Datasets (issue 14): sd-scripts' flags with dashes.
    private readonly Option<bool> _enableBucket = WithAlias(Parsing.Option<bool>("--enable-buckets", "Aspect-ratio buckets (sd-scripts' --enable_bucket; --enable-bucket also works)"), "--enable-bucket");
    private readonly Option<int?> _minBucketReso = Parsing.Option<int?>("--min-bucket-reso", "Smallest bucket side (default 256, or half the resolution)");
    private readonly Option<int?> _maxBucketReso = Parsing.Option<int?>("--max-bucket-reso", "Largest bucket side (default 1024, or the resolution)");
    private readonly Option<int?> _bucketResoSteps = Parsing.Option<int?>("--bucket-reso-steps", "Step between bucket sides, a multiple of 8 (default 64)");
    private readonly Option<bool> _bucketNoUpscale = Parsing.Option<bool>("--bucket-no-upscale", "Buckets from the images' own sizes, never enlarging");
    private readonly Option<string?> _captionExtension = Parsing.Option<string?>("--caption-extension", "Caption files' extension (default .txt; implies --caption-files)");
    private readonly Option<bool> _shuffleCaption = Parsing.Option<bool>("--shuffle-caption", "Shuffle the comma-separated tags of captions");
    private readonly Option<int?> _keepTokens = Parsing.Option<int?>("--keep-tokens", "Leading tags kept in place when shuffling (default 0)");
    private readonly Option<string?> _keepTokensSeparator = Parsing.Option<string?>("--keep-tokens-separator", "Tags before it stay first, after a second one last (e.g. \"|||\")");
    private readonly Option<double?> _captionDropoutRate = Parsing.Option<double?>("--caption-dropout-rate", "Probability of the empty caption (default 0)");
    private readonly Option<double?> _captionTagDropoutRate = Parsing.Option<double?>("--caption-tag-dropout-rate", "Probability of leaving out each tag (default 0)");
    private readonly Option<int?> _captionDropoutEveryNEpochs = Parsing.Option<int?>("--caption-dropout-every-n-epochs", "Empty captions every n-th epoch (default 0: never)");
    private readonly Option<string?> _captionPrefix = Parsing.Option<string?>("--caption-prefix", "Text before every caption");
    private readonly Option<string?> _captionSuffix = Parsing.Option<string?>("--caption-suffix", "Text after every caption");
    private readonly Option<int?> _maxEpochs = Parsing.Option<int?>("--max-epochs", "Train this many epochs instead of --max-steps");
    private readonly Option<bool> _cacheLatentsToDisk = Parsing.Option<bool>("--cache-latents-to-disk", "Cache latents on disk for later runs (beside the images, or in --latent-cache-dir)");
    private readonly Option<string?> _latentCacheDir = Parsing.Option<string?>("--latent-cache-dir", "With --cache-latents-to-disk: the cache folder");
    private readonly Option<string?> _datasetConfig = Parsing.Option<string?>("--dataset-config", "sd-scripts' dataset config (TOML or JSON): [general], one [[datasets]] and its [[datasets.subsets]] (instead of --data)");
    private readonly Option<int?> _saveEveryNEpochs = Parsing.Option<int?>("--save-every-n-epochs", "Also save a checkpoint at the end of every n-th epoch");
    private readonly Option<string?> _regData = Parsing.Option<string?>("--reg-data", "Regularisation (class) images: <repeats>_<class> sub-folders or a plain folder (sd-scripts' --reg_data_dir)");
    private readonly Option<double?> _priorLossWeight = Parsing.Option<double?>("--prior-loss-weight", "Loss weight of regularisation images (default 1)");
    private readonly Option<bool> _maskedLoss = Parsing.Option<bool>("--masked-loss", "Weight the loss by each image's alpha channel, or by --mask-dir's masks");
    private readonly Option<string?> _maskDir = Parsing.Option<string?>("--mask-dir", "With --masked-loss: one mask per image, same file name (red channel = weight)");

    private Option[] DatasetOptions => new Option[] { _enableBucket, _minBucketReso, _maxBucketReso, _bucketResoSteps, _bucketNoUpscale, _captionExtension, _shuffleCaption,
        _keepTokens, _keepTokensSeparator, _captionDropoutRate, _captionTagDropoutRate, _captionDropoutEveryNEpochs, _captionPrefix, _captionSuffix, _maxEpochs,
        _datasetConfig, _cacheLatentsToDisk, _latentCacheDir, _saveEveryNEpochs, _regData, _priorLossWeight, _maskedLoss, _maskDir };

    private static Option<T> WithAlias<T>(Option<T> option, string alias)
    {
        option.Aliases.Add(alias);
        return option;
    }

    public Command Build(Option<bool> verbose)
    {
        var command = new Command("train", "Train a LoRA (no --model and --data: the built-in demo on a tiny model and generated sketches)");
        foreach (var option in new Option[] { _model, _data, _caption, _captionFiles, _output, _resolution, _batchSize, _learningRate, _optimizer, _optimizerArgs, _loraEmaDecay, _loraEmaEvery, _loraEmaWarmup, _loraEmaOnly, _maxSteps, _warmupSteps,
                     _lrScheduler, _lrWarmupRatio, _lrCycles, _lrPower, _lrEnd, _lossType, _huberC, _huberSchedule, _debiasedEstimation, _ipNoiseGamma, _zeroTerminalSnr,
                     _vPredLikeLoss, _rank, _alpha,
                     _targets, _convRank, _convAlpha, _trainTextEncoder, _textEncoderLearningRate, _unetLearningRate,
                     _checkpointEvery, _keepCheckpoints, _mixedPrecision, _device, _seed, _resume, _validationPrompt, _validationEvery, _accumulation, _maxGradNorm,
                     _noiseOffset, _minSnrGamma, _randomCrop, _randomFlip, _skipBadImages, _cacheLatents, _gradientCheckpointing, _onNonFinite, _maxSkippedSteps, _tensorBoard,
                     _maxTokenLength, _clipSkip }.Concat(_modelSource.Options))
            command.Options.Add(option);
        foreach (var option in DatasetOptions)
            command.Options.Add(option);
        command.SetAction((result, cancellationToken) => Cli.RunAsync(result.GetValue(verbose), logger => RunAsync(result, logger, cancellationToken)));
        return command;
    }

    private async Task<int> RunAsync(ParseResult result, ILogger logger, CancellationToken cancellationToken)
    {
        string? model = result.GetValue(_model);
        string? data = result.GetValue(_data);
        bool hasConfig = result.GetValue(_datasetConfig) is not null;
        if (model is null && data is null && !hasConfig)
            return await Demo.RunAsync(result.GetValue(_output)!, Apply, logger, cancellationToken).ConfigureAwait(false);
        if (model is null || (data is null && !hasConfig))
            throw new ArgumentException(model is null ? "--data needs --model (omit both for the built-in demo)" : "--model needs --data or --dataset-config (omit both for the built-in demo)");

        var start = LoraTrainingBuilder.FromPretrained(model);
        if (data is not null)
            start = start.WithDataset(data);
        var builder = Apply(start.WithOutputDirectory(result.GetValue(_output)!))
            .WithSingleFileOptions(_modelSource.SingleFile(result))
            .WithHubOptions(_modelSource.Hub(result))
            .WithLogger(logger);
        var dataWait = TimeSpan.Zero;
        var training = await TrainWithProgressAsync(builder, cancellationToken, p => dataWait += p.DataWait).ConfigureAwait(false);
        Console.WriteLine(training.Cancelled
            ? $"Cancelled after step {training.StepsCompleted}; resume with: stablelora train ... --resume latest ({training.LastCheckpointPath})"
            : $"Trained {training.StepsCompleted} steps in {training.Elapsed:hh\\:mm\\:ss}; final loss {training.FinalLoss:F4}");
        Console.WriteLine(FormattableString.Invariant(
            $"Waited {dataWait.TotalSeconds:F1} s for images ({(training.Elapsed > TimeSpan.Zero ? 100 * dataWait / training.Elapsed : 0):F1}% of the run); decoding runs ahead on a background thread"));
        if (training.WeightsPath is not null)
            Console.WriteLine($"LoRA: {training.WeightsPath} (diffusers' attention-processor format; torch.load reads it)");
        Console.WriteLine($"{(training.WeightsPath is null ? "LoRA: " : "      ")}{training.KohyaWeightsPath} (kohya: AUTOMATIC1111 / ComfyUI / sd-scripts)");
        if (training.EmaKohyaWeightsPath is not null && training.EmaKohyaWeightsPath != training.KohyaWeightsPath)
            Console.WriteLine($"EMA:  {training.EmaKohyaWeightsPath}");
        return training.Cancelled ? ExitCodes.Cancelled : ExitCodes.Success;

        LoraTrainingBuilder Apply(LoraTrainingBuilder b) => ApplyOptions(b, result);
    }

    /// <summary>The dataset flags (buckets, captions, epochs) the user gave.</summary>
    private LoraTrainingBuilder ApplyDatasetOptions(LoraTrainingBuilder builder, ParseResult result) =>
        (result.GetValue(_datasetConfig) is { } config ? builder.WithDatasetConfig(config) : builder).WithOptions(o => o with
    {
        EnableBucket = result.GetValue(_enableBucket) || o.EnableBucket,
        MinBucketReso = result.GetValue(_minBucketReso) ?? o.MinBucketReso,
        MaxBucketReso = result.GetValue(_maxBucketReso) ?? o.MaxBucketReso,
        BucketResoSteps = result.GetValue(_bucketResoSteps) ?? o.BucketResoSteps,
        BucketNoUpscale = result.GetValue(_bucketNoUpscale) || o.BucketNoUpscale,
        CaptionExtension = result.GetValue(_captionExtension) ?? o.CaptionExtension,
        UseCaptionFiles = result.GetValue(_captionExtension) is not null || o.UseCaptionFiles,
        ShuffleCaption = result.GetValue(_shuffleCaption) || o.ShuffleCaption,
        KeepTokens = result.GetValue(_keepTokens) ?? o.KeepTokens,
        KeepTokensSeparator = result.GetValue(_keepTokensSeparator) ?? o.KeepTokensSeparator,
        CaptionDropoutRate = result.GetValue(_captionDropoutRate) ?? o.CaptionDropoutRate,
        CaptionTagDropoutRate = result.GetValue(_captionTagDropoutRate) ?? o.CaptionTagDropoutRate,
        CaptionDropoutEveryNEpochs = result.GetValue(_captionDropoutEveryNEpochs) ?? o.CaptionDropoutEveryNEpochs,
        CaptionPrefix = result.GetValue(_captionPrefix) ?? o.CaptionPrefix,
        CaptionSuffix = result.GetValue(_captionSuffix) ?? o.CaptionSuffix,
        MaxEpochs = result.GetValue(_maxEpochs) ?? o.MaxEpochs,
        SaveEveryNEpochs = result.GetValue(_saveEveryNEpochs) ?? o.SaveEveryNEpochs,
        CacheLatentsToDisk = result.GetValue(_cacheLatentsToDisk) || o.CacheLatentsToDisk,
        LatentCacheDirectory = result.GetValue(_latentCacheDir) ?? o.LatentCacheDirectory,
        RegularizationDirectory = result.GetValue(_regData) ?? o.RegularizationDirectory,
        PriorLossWeight = result.GetValue(_priorLossWeight) ?? o.PriorLossWeight,
        MaskedLoss = result.GetValue(_maskedLoss) || o.MaskedLoss,
        MaskDirectory = result.GetValue(_maskDir) ?? o.MaskDirectory,
    });

    /// <summary>Every flag the user gave, over the library's (or the demo's) defaults.</summary>
    private LoraTrainingBuilder ApplyOptions(LoraTrainingBuilder builder, ParseResult result)
    {
        T? Get<T>(Option<T?> option) where T : struct => result.GetValue(option);
        string? GetText(Option<string?> option) => result.GetValue(option);
        var targets = GetText(_targets) is { } targetText ? Parsing.Targets(targetText) : ((LoraPreset, string[])?)null;
        bool textEncoder = result.GetValue(_trainTextEncoder);
        var schedule = GetText(_lrScheduler) is { } scheduleText ? Parsing.LearningRateSchedule(scheduleText) : (LearningRateSchedule?)null;
        var lossType = GetText(_lossType) is { } lossText ? Parsing.LossType(lossText) : (LossType?)null;
        var huberSchedule = GetText(_huberSchedule) is { } huberText ? Parsing.HuberSchedule(huberText) : (HuberSchedule?)null;
        if (Get(_warmupSteps) is not null && Get(_lrWarmupRatio) is not null)
            throw new ArgumentException("--warmup-steps and --lr-warmup-ratio both set the warm-up: give one");
        if (schedule == LearningRateSchedule.Constant && Get(_warmupSteps) is > 0)
            throw new ArgumentException("--warmup-steps: the constant schedule has no warm-up; use --lr-scheduler constant_with_warmup");
        builder = ApplyDatasetOptions(builder, result);
        builder = ApplyOptimizer(builder, result);

        return builder.WithOptions(o => o with
        {
            Caption = GetText(_caption) ?? o.Caption,
            UseCaptionFiles = result.GetValue(_captionFiles) || o.UseCaptionFiles,
            Resolution = Get(_resolution) ?? o.Resolution,
            BatchSize = Get(_batchSize) ?? o.BatchSize,
            LearningRate = Get(_learningRate) ?? o.LearningRate,
            LoraEmaDecay = Get(_loraEmaDecay) ?? o.LoraEmaDecay,
            LoraEmaUpdateEvery = Get(_loraEmaEvery) ?? o.LoraEmaUpdateEvery,
            LoraEmaWarmup = result.GetValue(_loraEmaWarmup) || o.LoraEmaWarmup,
            LoraEmaOnly = result.GetValue(_loraEmaOnly) || o.LoraEmaOnly,
            MaxSteps = Get(_maxSteps) ?? o.MaxSteps,
            WarmupSteps = Get(_warmupSteps) ?? o.WarmupSteps,
            WarmupRatio = Get(_lrWarmupRatio) ?? (Get(_warmupSteps) is null ? o.WarmupRatio : null),
            LearningRateSchedule = schedule ?? o.LearningRateSchedule,
            LearningRateCycles = Get(_lrCycles) ?? o.LearningRateCycles,
            LearningRatePower = Get(_lrPower) ?? o.LearningRatePower,
            LearningRateEnd = Get(_lrEnd) ?? o.LearningRateEnd,
            LossType = lossType ?? o.LossType,
            HuberC = Get(_huberC) ?? o.HuberC,
            HuberSchedule = huberSchedule ?? o.HuberSchedule,
            DebiasedEstimation = result.GetValue(_debiasedEstimation) || o.DebiasedEstimation,
            IpNoiseGamma = Get(_ipNoiseGamma) ?? o.IpNoiseGamma,
            ZeroTerminalSnr = result.GetValue(_zeroTerminalSnr) || o.ZeroTerminalSnr,
            VPredLikeLoss = Get(_vPredLikeLoss) ?? o.VPredLikeLoss,
            Rank = Get(_rank) ?? o.Rank,
            Alpha = Get(_alpha) ?? o.Alpha,
            Preset = targets?.Item1 ?? o.Preset,
            TargetPatterns = targets?.Item2 ?? o.TargetPatterns,
            ConvRank = Get(_convRank) ?? o.ConvRank,
            ConvAlpha = Get(_convAlpha) ?? o.ConvAlpha,
            TrainTextEncoder = textEncoder || o.TrainTextEncoder,
            TextEncoderLearningRate = Get(_textEncoderLearningRate) ?? o.TextEncoderLearningRate,
            UnetLearningRate = Get(_unetLearningRate) ?? o.UnetLearningRate,
            CheckpointEvery = Get(_checkpointEvery) ?? o.CheckpointEvery,
            KeepLastCheckpoints = Get(_keepCheckpoints) ?? o.KeepLastCheckpoints,
            MixedPrecision = GetText(_mixedPrecision) is { } precision ? Parsing.Precision(precision) : o.MixedPrecision,
            Device = GetText(_device) ?? o.Device,
            Seed = Get(_seed) ?? o.Seed,
            ResumeFrom = GetText(_resume) ?? o.ResumeFrom,
            ValidationPrompt = GetText(_validationPrompt) ?? o.ValidationPrompt,
            ValidationEvery = Get(_validationEvery) ?? o.ValidationEvery,
            GradientAccumulationSteps = Get(_accumulation) ?? o.GradientAccumulationSteps,
            MaxGradNorm = Get(_maxGradNorm) ?? o.MaxGradNorm,
            NoiseOffset = Get(_noiseOffset) ?? o.NoiseOffset,
            MinSnrGamma = Get(_minSnrGamma) ?? o.MinSnrGamma,
            RandomCrop = result.GetValue(_randomCrop) || o.RandomCrop,
            RandomFlip = result.GetValue(_randomFlip) || o.RandomFlip,
            SkipUnreadableImages = result.GetValue(_skipBadImages) || o.SkipUnreadableImages,
            CacheLatents = result.GetValue(_cacheLatents) || o.CacheLatents,
            GradientCheckpointing = result.GetValue(_gradientCheckpointing) || o.GradientCheckpointing,
            TensorBoardDirectory = GetText(_tensorBoard) ?? o.TensorBoardDirectory,
            OnNonFiniteLoss = GetText(_onNonFinite) is { } policy ? Parsing.NonFinitePolicy(policy) : o.OnNonFiniteLoss,
            MaxConsecutiveSkippedSteps = Get(_maxSkippedSteps) ?? o.MaxConsecutiveSkippedSteps,
            MaxTokenLength = Get(_maxTokenLength) ?? o.MaxTokenLength,
            ClipSkip = Get(_clipSkip) ?? o.ClipSkip,
        });
    }

    /// <summary>--optimizer and --optimizer-args: a bitsandbytes or unknown name, or an argument that is not key=value, is a one-line error (exit 2); Build checks the keys.</summary>
    private LoraTrainingBuilder ApplyOptimizer(LoraTrainingBuilder builder, ParseResult result)
    {
        string? name = result.GetValue(_optimizer);
        string[] pairs = result.GetValue(_optimizerArgs) ?? Array.Empty<string>();
        if (name is null && pairs.Length == 0)
            return builder;
        var type = builder.Options.Optimizer;
        if (name is not null && !StableLora.Training.OptimizerChoice.TryParseName(name, out type, out string error))
            throw new ArgumentException($"--optimizer {error}");
        IReadOnlyDictionary<string, string> arguments;
        try
        {
            arguments = pairs.Length == 0 ? builder.Options.OptimizerArguments : StableLora.Training.OptimizerChoice.ParsePairs(pairs);
        }
        catch (FormatException e)
        {
            throw new ArgumentException($"--optimizer-args: {e.Message}", e);
        }

        return builder.WithOptimizer(type, arguments);
    }

    /// <summary>Builds the trainer with a progress display attached and runs it.</summary>
    public static Task<TrainingResult> TrainWithProgressAsync(LoraTrainingBuilder builder, CancellationToken cancellationToken, Action<TrainingProgress>? observe = null)
    {
        long maxSteps = builder.Options.MaxSteps;
        return ProgressDisplay.RunAsync("train", maxSteps, async report =>
        {
            var trainer = builder.WithProgress(new ReportingProgress(p =>
            {
                observe?.Invoke(p);
                report(p.Step, $"loss {p.SmoothedLoss:F4}  lr {p.LearningRate:G3}  {p.ImagesPerSecond:F1} img/s");
            })).Build();
            return await trainer.TrainAsync(cancellationToken).ConfigureAwait(false);
        });
    }

    /// <summary>Reports on the training thread: a console app has no synchronisation context for Progress&lt;T&gt; to post to.</summary>
    private sealed class ReportingProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
