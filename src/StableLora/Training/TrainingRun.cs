using System.Diagnostics;
using Microsoft.Extensions.Logging;
using StableLora.Lora;
using StableLora.Data;
using StableLora.Diagnostics;
using StableLora.Hub;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.TextEncoder;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// One training run, diffusers' LoRA training loop: VAE-encode without grad (latent_dist.sample x scaling factor),
/// DDPM noise at uniformly drawn timesteps, the caption through the text encoder (once per distinct caption when the
/// text encoder is frozen; every step, with gradients, when it has LoRA too), the UNet with LoRA, MSE against the noise
/// (or the velocity for v-prediction models; or sd-scripts' other losses and weightings), backward, AdamW on the LoRA only
/// (one parameter group per learning rate) with diffusers' learning-rate schedules (cosine with warm-up by default),
/// checkpoints, and the final LoRA files. Every random draw
/// comes from generators seeded by <see cref="LoraTrainingOptions.Seed"/> and saved in checkpoints, so a resumed run
/// continues exactly.
/// </summary>
internal sealed partial class TrainingRun
{
    private const double LossSmoothing = 0.05;
    private LoraTrainingOptions _options;
    private DatasetPlan? _plan;
    private readonly IImageDataset? _dataset;
    private readonly ILogger _logger;
    private readonly IProgress<TrainingProgress>? _progress;
    private readonly ObserverSet _observers;
    private readonly TrainingHooks _hooks;
    private readonly HubOptions _hub;
    private int _imageCount;
    private LoraEma? _ema;

    /// <summary>Options that shape the learning-rate schedule: changing one on resume bends the curve from the checkpoint on.</summary>
    private static readonly HashSet<string> ScheduleOptions = new(StringComparer.Ordinal)
    {
        nameof(LoraTrainingOptions.MaxSteps), nameof(LoraTrainingOptions.MaxEpochs), nameof(LoraTrainingOptions.WarmupSteps), nameof(LoraTrainingOptions.WarmupRatio),
        nameof(LoraTrainingOptions.LearningRate), nameof(LoraTrainingOptions.LearningRateSchedule), nameof(LoraTrainingOptions.LearningRateCycles),
        nameof(LoraTrainingOptions.LearningRatePower), nameof(LoraTrainingOptions.LearningRateEnd),
    };

    public TrainingRun(LoraTrainingOptions options, IImageDataset? dataset, ILogger logger, IProgress<TrainingProgress>? progress,
        IReadOnlyList<ITrainingObserver> observers, TrainingHooks? hooks = null, HubOptions? hub = null)
    {
        _hub = hub ?? new HubOptions();
        _options = options;
        _hooks = hooks ?? new TrainingHooks();
        _dataset = dataset;
        _logger = logger;
        _progress = progress;
        _observers = new ObserverSet(observers, logger);
    }

    public async Task<TrainingResult> RunAsync(CancellationToken cancellationToken)
    {
        long step = 0;
        try
        {
            return await RunCoreAsync(s => step = s, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            await _observers.NotifyAsync(o => o.OnTrainingFailedAsync(new TrainingFailedEvent(e, step))).ConfigureAwait(false);
            throw;
        }
    }

    private async Task<TrainingResult> RunCoreAsync(Action<long> reportStep, CancellationToken cancellationToken)
    {
        var options = _options;
        var device = DeviceSpec.ResolveForCompute(options.Device, _logger);
        var (dtype, vaeDtype) = ComponentPrecision.Resolve(ComponentPrecision.For(options.MixedPrecision), options.VaeInFloat32, device, nameof(options.MixedPrecision));
        var dataset = DatasetPlan.Compose(_dataset ?? DatasetPlan.OpenFolder(options), options);
        var usable = UsableImages(dataset);
        var plan = _plan = DatasetPlan.Create(dataset, usable, options, options.SkipUnreadableImages, e => Log.ImageSkipped(_logger, e.ImageName, e.Message));
        options = _options = plan.WithEpochLength(options);
        if (options.WarmupSteps is null && options.WarmupRatio is null && options.MaxSteps < LoraTrainingOptions.Defaults.WarmupSteps
            && options.LearningRateSchedule != LearningRateSchedule.Constant)
            Log.WarmupShortened(_logger, LoraTrainingOptions.Defaults.WarmupSteps, options.EffectiveWarmupSteps);

        var location = await ModelLocation.ResolveAsync(options.Model, HubSettings.Resolve(_hub), null, _logger, cancellationToken).ConfigureAwait(false);
        using var model = StableDiffusionModel.Load(location, new ModelLoadSettings(device, dtype, vaeDtype, dtype, null, _logger), options.SingleFile);
        _hooks.ModelLoaded?.Invoke(model);
        if (options.Resolution % model.VaeScaleFactor != 0)
            throw new InvalidOptionsException(new[] { new OptionError(nameof(options.Resolution), options.Resolution.ToString(System.Globalization.CultureInfo.InvariantCulture), $"must be a multiple of the VAE's scale factor {model.VaeScaleFactor}") });
        if (options.ClipSkip > model.TextEncoder.Config.NumHiddenLayers)
            throw new InvalidOptionsException(nameof(options.ClipSkip), options.ClipSkip,
                $"must not exceed the text encoder's layer count ({model.TextEncoder.Config.NumHiddenLayers}); 1 is the last layer, 2 the penultimate");
        var prediction = PredictionTarget(model.SchedulerConfig);
        if (options.ZeroTerminalSnr && prediction != PredictionKind.Velocity)
            throw new InvalidOptionsException(nameof(options.ZeroTerminalSnr), true,
                $"zero terminal SNR needs a v_prediction model; {options.Model} predicts epsilon (its last timestep would be pure noise it cannot denoise)");
        using var noiseScheduler = new DdpmScheduler(model.SchedulerConfig, zeroTerminalSnr: options.ZeroTerminalSnr);
        // sd-scripts computes the SNR loss weights before rescaling the betas (see LossFunctions.Compute).
        using var snrScheduler = options.ZeroTerminalSnr ? new DdpmScheduler(model.SchedulerConfig) : null;
        var schedule = LearningRateScheduleSettings.For(options);

        var store = new CheckpointStore(options.OutputDirectory);
        store.RemoveStaleTemporaries();
        string? resumeFolder = options.ResumeFrom is null ? null : store.Resolve(options.ResumeFrom);
        if (options.ResumeFrom is not null && resumeFolder is null)
            Log.NoCheckpointYet(_logger, store.OutputDirectory);
        using var resume = resumeFolder is null ? null : store.Load(resumeFolder);
        CheckResumable(resume);
        if (resume is not null)
        {
            var changed = CheckpointStore.ChangedOptions(resume.Directory, options);
            if (changed.Count > 0)
                Log.ResumedWithChangedOptions(_logger, resume.Directory, string.Join("; ", changed.Select(c =>
                    $"{c.Option} {c.Before} -> {c.Now}{(ScheduleOptions.Contains(c.Option) ? " (the learning-rate schedule changes)" : "")}")));
        }

        using var initGenerator = new Generator(options.Seed, CPU);
        using var network = LoraNetwork.Create(new AdaptableModels(model.Unet, options.TrainTextEncoder ? model.TextEncoder : null), options.NetworkOptions(), initGenerator);
        if (network.Modules.Count == 0)
            throw new InvalidOptionsException(nameof(options.TargetPatterns), string.Join(",", options.TargetPatterns), "no UNet layer matches these patterns");
        network.Attach();
        network.Train(true);
        model.Unet.train();
        model.Unet.GradientCheckpointing = options.GradientCheckpointing;

        var parameters = network.NamedParameters().ToList();
        var groups = LearningRateGroups(network, options);
        using var optimizer = OptimizerChoice.Create(options.Optimizer, options.OptimizerArguments, groups.Select(g => g.Parameters).ToList());
        bool ownLearningRate = OptimizerChoice.OwnLearningRate(options.Optimizer, options.OptimizerArguments);
        if (options.Optimizer == OptimizerType.Prodigy && groups.Select(g => g.PeakLearningRate).Where(r => r > 0).DefaultIfEmpty(options.LearningRate).Max() is var prodigyLr
            && (prodigyLr < 0.1 || prodigyLr > 10))
            Log.ProdigyLearningRate(_logger, prodigyLr);
        if (ownLearningRate)
            Log.AdafactorOwnLearningRate(_logger, options.LearningRate);
        var scaler = options.MixedPrecision == MixedPrecision.Fp16 ? new LossScaler(_hooks.InitialLossScale ?? LossScaler.DefaultInitialScale) : null;
        using var noiseGenerator = new Generator(options.Seed ^ 0xA5A5_5A5A_C3C3_3C3CUL, CPU);
        var state = new TrainerState();
        if (resume is not null)
            Restore(resume, parameters, optimizer, scaler, noiseGenerator, state);
        using var ema = _ema = options.LoraEmaDecay is { } emaDecay ? new LoraEma(parameters, new EmaSettings(emaDecay, options.LoraEmaWarmup)) : null;
        if (ema is not null && resume is not null)
        {
            if (resume.State.EmaUpdates is not { } emaUpdates)
                throw new InvalidOptionsException(nameof(options.LoraEmaDecay), options.LoraEmaDecay,
                    $"the checkpoint {resume.Directory} was made without an EMA of the LoRA weights, so this run cannot continue one (resume without LoraEmaDecay, or start afresh)");
            ema.LoadState(emaUpdates, resume.ReadEmaTensor, resume.Directory);
        }
        var lossParameters = parameters.Select(p => p.Parameter).ToList();
        var step = new LoraStep(model.Unet, model.Vae, noiseScheduler, prediction,
            new LoraStepSettings(options.NoiseOffset, options.MinSnrGamma, options.MaxGradNorm, options.IpNoiseGamma, LossSettings.For(options)), lossParameters, optimizer, scaler,
            snrScheduler);

        using var batches = new TrainingBatches(dataset, usable, options.BatchSize, new PreprocessOptions(options.Resolution, options.RandomCrop, options.RandomFlip),
            options.Seed, options.SkipUnreadableImages, _logger, plan);
        batches.Start(state.Epoch, state.EpochPosition);
        using var embeddings = new CaptionEmbeddings(model, options.Caption, dtype, cache: !network.AdaptsTextEncoder && !plan.Captions.IsRandom,
            options.MaxTokenLength, options.ClipSkip);
        using var latentCache = options.CacheLatents || options.CacheLatentsToDisk
            ? new LatentCache(options.CacheLatentsToDisk ? new LatentCache.DiskSettings(options.LatentCacheDirectory, LatentCache.VaeIdentity(model.Vae)) : null, _logger)
            : null;
        using var tensorBoard = options.TensorBoardDirectory is null ? null : new TensorBoardLog(options.TensorBoardDirectory);

        _imageCount = usable.Count;
        Log.TrainingStarting(_logger, usable.Count, device.ToString(), options.MaxSteps, state.Step);
        await _observers.NotifyAsync(o => o.OnTrainingStartedAsync(new TrainingStartedEvent(options, usable.Count, device.ToString(), state.Step))).ConfigureAwait(false);
        ThrowIfObserverFailed(state.Step, Array.Empty<string>(), lastCheckpoint: resume?.Directory);
        var control = new TrainingControl(cancellationToken);

        var clock = Stopwatch.StartNew();
        var throughput = new Throughput();
        double lossSum = 0;
        long stepsThisRun = 0;
        string? lastCheckpoint = resume?.Directory;
        bool cancelled = false;
        var skips = new ConsecutiveSkips(options.MaxConsecutiveSkippedSteps);

        while (state.Step < options.MaxSteps)
        {
            if (cancellationToken.IsCancellationRequested || control.StopRequested)
            {
                cancelled = true;
                break;
            }

            var stepStart = clock.Elapsed;
            double stepLoss = 0;
            var nonFiniteImages = new List<string>();
            var stepImages = new List<string>();
            double lossScale = scaler?.Scale ?? 1.0;
            var dataWait = TimeSpan.Zero;
            int? endedEpoch = null;
            for (int micro = 0; micro < options.GradientAccumulationSteps; micro++)
            {
                var waitStart = clock.Elapsed;
                using var batch = await batches.NextAsync(CancellationToken.None).ConfigureAwait(false);
                dataWait += clock.Elapsed - waitStart;
                if (batch.EndsEpoch)
                    endedEpoch = batch.Epoch;
                _hooks.BeforeMicroStep?.Invoke(state.Step + 1, batch.Pixels);
                double loss;
                using (var scope = NewDisposeScope())
                {
                    var moments = latentCache is null ? step.Encode(batch.Pixels) : latentCache.Moments(batch, step.Encode);
                    loss = step.ForwardBackward(moments, embeddings.For(batch.Captions), noiseGenerator, lossScale / options.GradientAccumulationSteps,
                        batch.Masks, batch.LossWeights);
                }

                stepImages.AddRange(batch.Names);
                if (!double.IsFinite(loss))
                    nonFiniteImages.AddRange(batch.Names);
                stepLoss += loss / options.GradientAccumulationSteps;
                state.Epoch = batch.Epoch;
                state.EpochPosition = batch.NextPosition;
            }

            _hooks.BeforeOptimizerStep?.Invoke(state.Step + 1, lossParameters);
            double multiplier = schedule.Multiplier(state.SchedulerSteps);
            var learningRates = groups.Select(g => g.PeakLearningRate * multiplier).ToList();
            bool skipped = true;
            if (nonFiniteImages.Count > 0)
            {
                Log.NonFiniteLoss(_logger, state.Step + 1, string.Join(", ", nonFiniteImages));
                step.Discard();
                if (options.OnNonFiniteLoss == NonFiniteLossPolicy.Stop)
                    throw new TrainingFailedException(state.Step + 1, nonFiniteImages, "the loss is not finite", lastCheckpoint);
                skips.Count(state.Step + 1, stepImages, "the loss is not finite", lastCheckpoint);
            }
            else
            {
                switch (step.Update(learningRates))
                {
                    case UpdateOutcome.Applied:
                        skipped = false;
                        skips.Reset();
                        state.SchedulerSteps++;
                        break;
                    case UpdateOutcome.SkippedOverflow:
                        Log.LossScaleOverflow(_logger, state.Step + 1, scaler!.Scale);
                        // Overflows while the scale searches down from 65536 are normal; at a scale of 1 or less the
                        // gradients overflow without scaling, which is a failure like any other.
                        if (lossScale <= 1.0)
                            skips.Count(state.Step + 1, stepImages, "the gradients are not finite even without loss scaling", lastCheckpoint);
                        break;
                    case UpdateOutcome.SkippedNonFiniteGradients:
                        Log.NonFiniteGradients(_logger, state.Step + 1, string.Join(", ", stepImages));
                        if (options.OnNonFiniteLoss == NonFiniteLossPolicy.Stop)
                            throw new TrainingFailedException(state.Step + 1, stepImages, "the gradients are not finite", lastCheckpoint);
                        skips.Count(state.Step + 1, stepImages, "the gradients are not finite", lastCheckpoint);
                        break;
                }
            }

            state.Step++;
            if (ema is not null && state.Step % options.LoraEmaUpdateEvery == 0)
                ema.Update();
            reportStep(state.Step);
            if (double.IsFinite(stepLoss))
            {
                state.SmoothedLoss = stepsThisRun == 0 && resume is null ? stepLoss : state.SmoothedLoss + LossSmoothing * (stepLoss - state.SmoothedLoss);
                state.LastLoss = stepLoss;
                lossSum += stepLoss;
                stepsThisRun++;
            }

            throughput.Add(options.BatchSize * options.GradientAccumulationSteps, clock.Elapsed - stepStart);
            // Adafactor with relative_step reports its own learning rate, as sd-scripts' adafactor schedule does.
            var effective = optimizer.EffectiveLearningRates.Count == learningRates.Count ? optimizer.EffectiveLearningRates.ToArray() : learningRates.ToArray();
            double learningRate = ownLearningRate ? effective.FirstOrDefault() : options.LearningRate * multiplier;
            var progress = new TrainingProgress(state.Step, options.MaxSteps, state.Epoch, stepLoss, state.SmoothedLoss, learningRate,
                throughput.ImagesPerSecond, clock.Elapsed, throughput.Remaining(options.MaxSteps - state.Step, options.BatchSize * options.GradientAccumulationSteps), skipped,
                scaler?.Scale ?? 1.0)
            {
                LearningRates = ownLearningRate ? effective : learningRates.ToArray(),
                EffectiveLearningRates = effective,
                DataWait = dataWait,
            };
            _progress?.Report(progress);
            tensorBoard?.Write(progress);
            await _observers.NotifyAsync(o => o.OnStepCompletedAsync(new StepCompletedEvent(progress) { Control = control })).ConfigureAwait(false);
            if (_observers.Failure is not null)
            {
                lastCheckpoint = await SaveCheckpointAsync(store, network, optimizer, scaler, noiseGenerator, state, lastCheckpoint).ConfigureAwait(false);
                ThrowIfObserverFailed(state.Step, stepImages, lastCheckpoint);
            }

            bool checkpointStep = (options.CheckpointEvery > 0 && state.Step % options.CheckpointEvery == 0)
                || (options.SaveEveryNEpochs > 0 && endedEpoch is { } ended && (ended + 1) % options.SaveEveryNEpochs == 0);
            if (checkpointStep && state.Step < options.MaxSteps)
                lastCheckpoint = await SaveCheckpointAsync(store, network, optimizer, scaler, noiseGenerator, state, lastCheckpoint).ConfigureAwait(false);
            if (options.ValidationPrompt is not null && (options.ValidationEvery > 0 ? state.Step % options.ValidationEvery == 0 : checkpointStep || state.Step == options.MaxSteps))
            {
                EnsureFinite(network, optimizer, state.Step, lastCheckpoint, "the validation images were");
                await ValidateAsync(model, network, state.Step).ConfigureAwait(false);
                if (_observers.Failure is not null)
                {
                    lastCheckpoint = await SaveCheckpointAsync(store, network, optimizer, scaler, noiseGenerator, state, lastCheckpoint).ConfigureAwait(false);
                    ThrowIfObserverFailed(state.Step, stepImages, lastCheckpoint);
                }
            }
        }

        if (latentCache is not null && options.CacheLatentsToDisk)
            Log.LatentCacheSummary(_logger, latentCache.Reused, latentCache.Encoded);

        if (cancelled)
        {
            // A cancelled run leaves the final files as they were (an earlier run's stay untouched): its LoRA is the checkpoint's.
            lastCheckpoint = await SaveCheckpointAsync(store, network, optimizer, scaler, noiseGenerator, state, lastCheckpoint).ConfigureAwait(false);
            Log.TrainingCancelled(_logger, state.Step, lastCheckpoint);
            _hooks.TrainingFinished?.Invoke(model);
            string seedFile = Path.Combine(lastCheckpoint, CheckpointStore.LoraFile);
            string? checkpointWeights = File.Exists(seedFile) ? seedFile : null;
            string checkpointKohya = Path.Combine(lastCheckpoint, CheckpointStore.KohyaLoraFile);
            var cancelledResult = new TrainingResult
            {
                LoraPath = checkpointWeights ?? checkpointKohya,
                WeightsPath = checkpointWeights,
                KohyaWeightsPath = checkpointKohya,
                StepsCompleted = state.Step,
                FinalLoss = state.LastLoss,
                AverageLoss = stepsThisRun > 0 ? lossSum / stepsThisRun : double.NaN,
                Elapsed = clock.Elapsed,
                Cancelled = true,
                LastCheckpointPath = lastCheckpoint,
            };
            await _observers.NotifyAsync(o => o.OnTrainingCompletedAsync(new TrainingCompletedEvent(cancelledResult))).ConfigureAwait(false);
            return cancelledResult;
        }

        if (options.CheckpointEvery > 0 && state.Step % options.CheckpointEvery == 0)
        {
            lastCheckpoint = await SaveCheckpointAsync(store, network, optimizer, scaler, noiseGenerator, state, lastCheckpoint).ConfigureAwait(false);
        }

        _hooks.TrainingFinished?.Invoke(model);
        EnsureFinite(network, optimizer, state.Step, lastCheckpoint, "the final LoRA files were");
        var (weightsPath, kohyaPath, emaWeightsPath, emaKohyaPath) = SaveFinal(network, state, usable.Count, lastCheckpoint);
        var result = new TrainingResult
        {
            LoraPath = weightsPath ?? kohyaPath,
            WeightsPath = weightsPath,
            KohyaWeightsPath = kohyaPath,
            StepsCompleted = state.Step,
            FinalLoss = state.LastLoss,
            AverageLoss = stepsThisRun > 0 ? lossSum / stepsThisRun : double.NaN,
            Elapsed = clock.Elapsed,
            Cancelled = false,
            LastCheckpointPath = lastCheckpoint,
            EmaWeightsPath = emaWeightsPath,
            EmaKohyaWeightsPath = emaKohyaPath,
        };
        await _observers.NotifyAsync(o => o.OnTrainingCompletedAsync(new TrainingCompletedEvent(result))).ConfigureAwait(false);
        return result;
    }

    /// <summary>The optimizer's parameter groups: the UNet's LoRA and the text encoder's, each at its own peak learning rate.</summary>
    private static List<(IReadOnlyList<(string Name, Parameter Parameter)> Parameters, double PeakLearningRate)> LearningRateGroups(LoraNetwork network, LoraTrainingOptions options)
    {
        var unet = network.NamedParameters().Where(p => ModuleKeys.IsUnet(p.Name)).ToList();
        var textEncoder = network.NamedParameters().Where(p => ModuleKeys.IsTextEncoder(p.Name)).ToList();
        var groups = new List<(IReadOnlyList<(string, Parameter)>, double)>();
        if (unet.Count > 0)
            groups.Add((unet, options.UnetLearningRate ?? options.LearningRate));
        if (textEncoder.Count > 0)
            groups.Add((textEncoder, options.TextEncoderLearningRate ?? options.LearningRate));
        return groups;
    }

    /// <summary>Renders the validation prompt with the LoRA as it is now (evaluation mode, then back to training).</summary>
    private async Task ValidateAsync(StableDiffusionModel model, LoraNetwork network, long step)
    {
        IReadOnlyList<string> paths;
        model.Unet.eval();
        network.Train(false);
        try
        {
            using var generator = StableDiffusionGenerator.FromPretrained(_options.Model).WithLogger(_logger).BuildOver(model);
            using var images = generator.Generate(_options.ValidationPrompt!, new GenerationOptions
            {
                Width = _options.Resolution,
                Height = _options.Resolution,
                Steps = 20,
                Seed = _options.Seed,
                ClipSkip = _options.ClipSkip,
                LongPrompts = _options.MaxTokenLength > PromptChunks.ChunkTokens ? LongPromptMode.Chunk : LongPromptMode.Truncate,
            });
            string directory = Path.Combine(_options.OutputDirectory, "validation", $"step-{step}");
            paths = images.SaveAll(directory);
        }
        finally
        {
            model.Unet.train();
            network.Train(true);
        }

        Log.ValidationImagesSaved(_logger, step, string.Join(", ", paths));
        await _observers.NotifyAsync(o => o.OnValidationImagesAsync(new ValidationImagesEvent(step, paths))).ConfigureAwait(false);
    }

    /// <summary>An observer that threw stops the run: a <see cref="TrainingFailedException"/> wrapping what it threw, naming the checkpoint saved first.</summary>
    private void ThrowIfObserverFailed(long step, IReadOnlyList<string> images, string? lastCheckpoint)
    {
        if (_observers.TakeFailure() is { } failure)
            throw new TrainingFailedException(step, images, $"the training observer {failure.Observer} threw: {failure.Error.Message}", lastCheckpoint, failure.Error);
    }

    /// <summary>Refuses to write anything from LoRA, optimizer or EMA tensors that hold NaN or infinity.</summary>
    private void EnsureFinite(LoraNetwork network, ILoraOptimizer optimizer, long step, string? lastCheckpoint, string what)
    {
        var tensors = network.NamedParameters().Select(p => new KeyValuePair<string, Tensor>(p.Name, p.Parameter)).Concat(optimizer.StateTensors())
            .Concat(_ema?.StateTensors().Select(e => new KeyValuePair<string, Tensor>("ema." + e.Key, e.Value)) ?? Enumerable.Empty<KeyValuePair<string, Tensor>>()).ToList();
        var bad = GradientChecks.NonFinite(tensors);
        if (bad.Count > 0)
            throw new TrainingFailedException(step, Array.Empty<string>(),
                $"{what} not written: {bad.Count} LoRA or optimizer tensor(s) hold NaN or infinity ({string.Join(", ", bad.Take(3))}{(bad.Count > 3 ? ", ..." : "")})",
                lastCheckpoint);
    }

    private static PredictionKind PredictionTarget(SchedulerConfig config) => config.PredictionType switch
    {
        null or "epsilon" => PredictionKind.Epsilon,
        "v_prediction" => PredictionKind.Velocity,
        var other => throw config.Unsupported("prediction_type", other, "LoRA training supports epsilon and v_prediction models"),
    };
}

/// <summary>Test seams: see the model the run loaded, and force an fp16 loss scale.</summary>
internal sealed record TrainingHooks
{
    public Action<StableDiffusionModel>? ModelLoaded { get; init; }

    public Action<StableDiffusionModel>? TrainingFinished { get; init; }

    public double? InitialLossScale { get; init; }

    /// <summary>Called with the step number and each micro-batch's pixels before its forward pass (to poison inputs in tests).</summary>
    public Action<long, Tensor>? BeforeMicroStep { get; init; }

    /// <summary>Called with the step number and the LoRA parameters (gradients set) just before the update.</summary>
    public Action<long, IReadOnlyList<Parameter>>? BeforeOptimizerStep { get; init; }
}

/// <summary>What the UNet is trained to predict.</summary>
internal enum PredictionKind
{
    Epsilon,
    Velocity,
}
