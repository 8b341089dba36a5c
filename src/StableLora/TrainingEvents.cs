namespace StableLora;

/// <summary>
/// A snapshot of training progress, reported through <see cref="IProgress{T}"/> after every optimizer step. It is an
/// immutable value, so a <see cref="Progress{T}"/> that marshals it to another thread later still sees this step.
/// </summary>
public readonly record struct TrainingProgress(
    long Step,
    long MaxSteps,
    int Epoch,
    double Loss,
    double SmoothedLoss,
    double LearningRate,
    double ImagesPerSecond,
    TimeSpan Elapsed,
    TimeSpan EstimatedRemaining,
    bool SkippedStep,
    double LossScale)
{
    /// <summary>
    /// How long this step waited for its images (decoding and preprocessing run ahead on a background thread; a wait
    /// well above zero means the data, not the model, sets the pace).
    /// </summary>
    public TimeSpan DataWait { get; init; }

    /// <summary>
    /// The learning rate of each optimizer parameter group this step (the UNet's, then the text encoder's when it is
    /// trained), as the schedule gave it; Adafactor with relative_step reports its own. Empty when not known.
    /// </summary>
    public IReadOnlyList<double> LearningRates { get; init; } = Array.Empty<double>();

    /// <summary>
    /// The step size each group's update used, as sd-scripts logs it: the learning rate for AdamW, Lion and SGD, d x lr
    /// for Prodigy (its <c>lr/d*lr</c>), Adafactor's own learning rate (that of each group's first parameter). Empty when not known.
    /// </summary>
    public IReadOnlyList<double> EffectiveLearningRates { get; init; } = Array.Empty<double>();
}

/// <summary>What a finished (or cancelled) training run produced.</summary>
public sealed record TrainingResult
{
    /// <summary>The main LoRA file: <see cref="WeightsPath"/> when the attention-processor format can hold the network (the
    /// <see cref="LoraPreset.Attention"/> preset), else <see cref="KohyaWeightsPath"/>.</summary>
    public required string LoraPath { get; init; }

    /// <summary>The LoRA in diffusers' attention-processor format (<c>output/lora_weights.pt</c>), or null when that format cannot
    /// hold it (layers outside the UNet's attention projections, or the text encoder).</summary>
    public string? WeightsPath { get; init; }

    /// <summary>The LoRA as a kohya / AUTOMATIC1111 / ComfyUI <c>.safetensors</c> (<c>output/lora_kohya.safetensors</c>).
    /// For a cancelled run all three paths name the files of the checkpoint it saved; the final files are not written.</summary>
    public required string KohyaWeightsPath { get; init; }

    /// <summary>Optimizer steps done, including those of a run this one resumed.</summary>
    public required long StepsCompleted { get; init; }

    /// <summary>The last step's loss.</summary>
    public required double FinalLoss { get; init; }

    /// <summary>The mean loss over the steps of this run.</summary>
    public required double AverageLoss { get; init; }

    /// <summary>Wall time of this run.</summary>
    public required TimeSpan Elapsed { get; init; }

    /// <summary>True when the run stopped early because it was cancelled (a checkpoint was saved first).</summary>
    public required bool Cancelled { get; init; }

    /// <summary>The newest checkpoint folder, or null when none was written.</summary>
    public string? LastCheckpointPath { get; init; }

    /// <summary>
    /// With an EMA of the LoRA weights (<see cref="LoraTrainingOptions.LoraEmaDecay"/>): its kohya file
    /// (<c>lora_kohya-ema.safetensors</c>); else null.
    /// </summary>
    public string? EmaKohyaWeightsPath { get; init; }

    /// <summary>With an EMA: its file in diffusers' attention-processor format (<c>lora_weights-ema.pt</c>) when that format can hold the network; else null.</summary>
    public string? EmaWeightsPath { get; init; }
}

/// <summary>Training has started.</summary>
/// <param name="Options">The options after defaults and resolution (device, paths).</param>
/// <param name="ImageCount">Usable images in the dataset.</param>
/// <param name="Device">The device training runs on ("cpu", "cuda:0").</param>
/// <param name="StartStep">0, or the step of the checkpoint resumed from.</param>
public readonly record struct TrainingStartedEvent(LoraTrainingOptions Options, int ImageCount, string Device, long StartStep);

/// <summary>An optimizer step finished.</summary>
/// <param name="Progress">The progress snapshot after the step.</param>
public readonly record struct StepCompletedEvent(TrainingProgress Progress)
{
    /// <summary>The run's cancellation token and a way to stop it gracefully (null only for an event made outside a run).</summary>
    public TrainingControl? Control { get; init; }
}

/// <summary>
/// What an observer can do to the run it observes: read its cancellation token, and ask it to stop after the current
/// step, as a cancellation does (a resumable checkpoint is saved and the result says <c>Cancelled</c>).
/// </summary>
public sealed class TrainingControl
{
    private int _stopRequested;

    internal TrainingControl(CancellationToken cancellationToken)
    {
        CancellationToken = cancellationToken;
    }

    /// <summary>The token the run was started with.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>Whether <see cref="RequestStop"/> was called.</summary>
    public bool StopRequested => Volatile.Read(ref _stopRequested) == 1;

    /// <summary>Stops the run after the current step, saving a checkpoint (a graceful stop; the run's result says Cancelled).</summary>
    public void RequestStop() => Interlocked.Exchange(ref _stopRequested, 1);
}

/// <summary>A checkpoint folder was written completely.</summary>
/// <param name="Path">The checkpoint folder (<c>output/checkpoint-step-N</c>).</param>
/// <param name="Step">The step it holds.</param>
public readonly record struct CheckpointSavedEvent(string Path, long Step);

/// <summary>Validation images were generated with the current LoRA.</summary>
/// <param name="Step">The step they show.</param>
/// <param name="ImagePaths">The PNG files written.</param>
public readonly record struct ValidationImagesEvent(long Step, IReadOnlyList<string> ImagePaths);

/// <summary>Training finished (or was cancelled and saved).</summary>
/// <param name="Result">What it produced.</param>
public readonly record struct TrainingCompletedEvent(TrainingResult Result);

/// <summary>Training failed; the last complete checkpoint (if any) is intact.</summary>
/// <param name="Error">What went wrong.</param>
/// <param name="Step">The step at which it failed.</param>
public readonly record struct TrainingFailedEvent(Exception Error, long Step);

/// <summary>
/// Hooks into a training run. Every method has a default that does nothing, so implement only those you need.
/// Observers are called in the order they were added, on the training thread, between steps. An observer that
/// throws is logged and ignored: training continues, and the other observers are still called.
/// </summary>
public interface ITrainingObserver
{
    /// <summary>Called once before the first step.</summary>
    /// <param name="e">The resolved options and dataset size.</param>
    ValueTask OnTrainingStartedAsync(TrainingStartedEvent e) => ValueTask.CompletedTask;

    /// <summary>Called after every optimizer step.</summary>
    /// <param name="e">The progress snapshot.</param>
    ValueTask OnStepCompletedAsync(StepCompletedEvent e) => ValueTask.CompletedTask;

    /// <summary>Called after a checkpoint folder is complete on disk.</summary>
    /// <param name="e">Where, and which step.</param>
    ValueTask OnCheckpointSavedAsync(CheckpointSavedEvent e) => ValueTask.CompletedTask;

    /// <summary>Called after validation images are written.</summary>
    /// <param name="e">The step and files.</param>
    ValueTask OnValidationImagesAsync(ValidationImagesEvent e) => ValueTask.CompletedTask;

    /// <summary>Called once when training ends normally or after cancellation.</summary>
    /// <param name="e">The result.</param>
    ValueTask OnTrainingCompletedAsync(TrainingCompletedEvent e) => ValueTask.CompletedTask;

    /// <summary>Called once when training fails.</summary>
    /// <param name="e">The error and step.</param>
    ValueTask OnTrainingFailedAsync(TrainingFailedEvent e) => ValueTask.CompletedTask;
}
