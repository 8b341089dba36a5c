namespace StableLora.Tests.Infrastructure;

/// <summary>Records every step's progress.</summary>
internal sealed class ProgressRecorder(List<TrainingProgress> progress) : ITrainingObserver
{
    public ValueTask OnStepCompletedAsync(StepCompletedEvent e)
    {
        progress.Add(e.Progress);
        return ValueTask.CompletedTask;
    }
}

/// <summary>Cancels <paramref name="source"/> when step <paramref name="step"/> completes.</summary>
internal sealed class CancelAt(long step, CancellationTokenSource source) : ITrainingObserver
{
    public ValueTask OnStepCompletedAsync(StepCompletedEvent e)
    {
        if (e.Progress.Step == step)
            source.Cancel();
        return ValueTask.CompletedTask;
    }
}
