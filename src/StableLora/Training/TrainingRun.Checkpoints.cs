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

/// <summary>Saving a checkpoint of the run and restoring a run from one, so that a resumed run continues exactly.</summary>
internal sealed partial class TrainingRun
{
    private async Task<string> SaveCheckpointAsync(CheckpointStore store, LoraNetwork network, ILoraOptimizer optimizer, LossScaler? scaler, Generator noiseGenerator,
        TrainerState state, string? previousCheckpoint)
    {
        EnsureFinite(network, optimizer, state.Step, previousCheckpoint, "the checkpoint was");
        string path;
        try
        {
            path = SaveCheckpoint(store, network, optimizer, scaler, noiseGenerator, state);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.CheckpointFailed(_logger, state.Step, previousCheckpoint ?? "none", e);
            throw new OutputSaveException(store.PathFor(state.Step), state.Step, previousCheckpoint, e);
        }

        Log.CheckpointSaved(_logger, state.Step, path);
        await _observers.NotifyAsync(o => o.OnCheckpointSavedAsync(new CheckpointSavedEvent(path, state.Step))).ConfigureAwait(false);
        ThrowIfObserverFailed(state.Step, Array.Empty<string>(), path);
        return path;
    }

    private string SaveCheckpoint(CheckpointStore store, LoraNetwork network, ILoraOptimizer optimizer, LossScaler? scaler, Generator noiseGenerator, TrainerState state)
    {
        using var scope = NewDisposeScope();
        var trainerState = state with
        {
            OptimizerSteps = optimizer.StepCount,
            Optimizer = _options.Optimizer,
            EmaUpdates = _ema?.Updates,
            LossScale = scaler?.Scale ?? 1.0,
            LossScaleGoodSteps = scaler?.GoodSteps ?? 0,
            Seed = _options.Seed,
            Rank = _options.Rank,
            Alpha = _options.Alpha ?? _options.Rank,
        };
        var checkpoint = new Checkpoint(trainerState, _options, network.ToModuleWeights(),
            network.NamedParameters().Select(p => new KeyValuePair<string, Tensor>(p.Name, p.Parameter.detach())).ToList(),
            optimizer.StateTensors(), noiseGenerator.get_state(), get_rng_state(), KohyaMetadata(state, _imageCount), _ema?.StateTensors());
        return store.Save(checkpoint, _options.KeepLastCheckpoints);
    }

    private void CheckResumable(LoadedCheckpoint? resume)
    {
        if (resume is null)
            return;
        var s = resume.State;
        double alpha = _options.Alpha ?? _options.Rank;
        if (s.Rank != _options.Rank || s.Alpha != alpha || s.Seed != _options.Seed)
            throw new InvalidOptionsException(new[]
            {
                new OptionError(nameof(_options.ResumeFrom), resume.Directory,
                    $"the checkpoint was made with rank {s.Rank}, alpha {s.Alpha}, seed {s.Seed}; this run has rank {_options.Rank}, alpha {alpha}, seed {_options.Seed}"),
            });
        var saved = s.Optimizer ?? OptimizerType.AdamW;
        if (saved != _options.Optimizer)
            throw new InvalidOptionsException(nameof(_options.ResumeFrom), resume.Directory,
                $"the checkpoint holds {saved}'s state; this run's optimizer is {_options.Optimizer} (resume with the same optimizer)");
    }

    private static void Restore(LoadedCheckpoint resume, List<(string Name, Parameter Parameter)> parameters, ILoraOptimizer optimizer, LossScaler? scaler,
        Generator noiseGenerator, TrainerState state)
    {
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            foreach (var (name, parameter) in parameters)
            {
                var saved = resume.ReadLoraParameter(name) ?? throw new InvalidModelFileException(resume.Directory, name, "the checkpoint lacks this LoRA parameter");
                parameter.copy_(saved);
            }
        }

        // AdamW starts a moment it lacks from zero (as it always has); the other optimizers' state must all be there.
        optimizer.LoadState(resume.State.OptimizerSteps, name => resume.ReadOptimizerTensor(name)
            ?? (optimizer is AdamWOptimizer ? null : throw new InvalidModelFileException(resume.Directory, name, "the checkpoint lacks this optimizer state")));
        noiseGenerator.set_state(resume.NoiseGeneratorState);
        set_rng_state(resume.GlobalRngState);
        scaler?.Restore(resume.State.LossScale, resume.State.LossScaleGoodSteps);
        state.Step = resume.State.Step;
        state.Epoch = resume.State.Epoch;
        state.EpochPosition = resume.State.EpochPosition;
        state.SchedulerSteps = resume.State.SchedulerSteps;
        state.SmoothedLoss = resume.State.SmoothedLoss;
        state.LastLoss = resume.State.LastLoss;
    }
}
