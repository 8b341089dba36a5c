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

/// <summary>The run's final LoRA files and the kohya metadata written into them.</summary>
internal sealed partial class TrainingRun
{
    /// <summary>
    /// Writes the trained weights as <c>lora_kohya.safetensors</c> and, when the attention-processor format can hold the network,
    /// <c>lora_weights.pt</c>; with an EMA, its weights as <c>lora_kohya-ema.safetensors</c> (and <c>lora_weights-ema.pt</c>)
    /// too, or only those. An attention-processor file left by an earlier run that this network cannot be written as is removed,
    /// so that it cannot be taken for this run's LoRA. Returns the main files: the EMA's when only they are written.
    /// </summary>
    private (string? Weights, string Kohya, string? EmaWeights, string? EmaKohya) SaveFinal(LoraNetwork network, TrainerState state, int imageCount, string? lastCheckpoint)
    {
        (string? Weights, string Kohya)? trained = _options.LoraEmaOnly ? null : SaveFiles(network, state, imageCount, lastCheckpoint, "");
        (string? Weights, string Kohya)? ema = _ema is null ? null : _ema.WithEmaWeights(() => SaveFiles(network, state, imageCount, lastCheckpoint, "-ema"));
        var main = trained ?? ema!.Value;
        return (main.Weights, main.Kohya, ema?.Weights, ema?.Kohya);
    }

    private (string? Weights, string Kohya) SaveFiles(LoraNetwork network, TrainerState state, int imageCount, string? lastCheckpoint, string suffix)
    {
        using var scope = NewDisposeScope();
        string weights = Path.GetFullPath(Path.Combine(_options.OutputDirectory, WithSuffix(CheckpointStore.LoraFile, suffix)));
        string kohya = Path.GetFullPath(Path.Combine(_options.OutputDirectory, WithSuffix(CheckpointStore.KohyaLoraFile, suffix)));
        var modules = network.ToModuleWeights();
        string? seedFormatProblem = IO.LoraFileWriter.CannotHoldInSeedFormat(modules);
        string target = weights;
        try
        {
            Directory.CreateDirectory(_options.OutputDirectory);
            if (seedFormatProblem is null)
            {
                IO.LoraFileWriter.Write(weights, modules, LoraFileFormat.AttnProcs);
            }
            else
            {
                Log.SeedFormatNotWritten(_logger, seedFormatProblem, kohya);
                if (File.Exists(weights))
                {
                    File.Delete(weights);
                    Log.StaleSeedFileRemoved(_logger, weights);
                }
            }

            target = kohya;
            IO.LoraFileWriter.Write(kohya, modules, LoraFileFormat.Kohya, KohyaMetadata(state, imageCount));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OutputSaveException(target, state.Step, lastCheckpoint, e);
        }

        Log.FinalWeightsSaved(_logger, seedFormatProblem is null ? $"{weights} and {kohya}" : kohya);
        return (seedFormatProblem is null ? weights : null, kohya);
    }

    /// <summary><c>lora_kohya.safetensors</c> with <c>-ema</c>: <c>lora_kohya-ema.safetensors</c>.</summary>
    private static string WithSuffix(string file, string suffix) => Path.GetFileNameWithoutExtension(file) + suffix + Path.GetExtension(file);

    private LoraExportMetadata KohyaMetadata(TrainerState state, int imageCount)
    {
        var extra = new Dictionary<string, string>();
        if (_options.TrainTextEncoder)
            extra["ss_text_encoder_lr"] = IO.PythonFloats.Repr(_options.TextEncoderLearningRate ?? _options.LearningRate);
        extra["ss_unet_lr"] = IO.PythonFloats.Repr(_options.UnetLearningRate ?? _options.LearningRate);
        extra["ss_network_train_unet_only"] = _options.TrainTextEncoder ? "False" : "True";
        foreach (var (key, value) in TrainingSettingsMetadata(_options))
            extra[key] = value;
        _plan?.AddMetadata(extra, _options, state.Step, state.Epoch);
        return new LoraExportMetadata
        {
            OutputName = "lora_kohya",
            BaseModel = _options.Model,
            TrainingSteps = state.Step,
            Resolution = _options.Resolution,
            LearningRate = _options.LearningRate,
            ImageCount = imageCount,
            Extra = extra,
        };
    }

    /// <summary>
    /// The schedule and loss settings as sd-scripts' train_network.py writes them (<c>str(args.x)</c>): Python's repr of
    /// floats, "True"/"False", "None" for an unset option. <c>ss_lr_warmup_steps</c> is the ratio when one was given
    /// (kohya takes a float below 1 as a ratio) and 0 for the constant schedule, which has no warm-up; sd-scripts writes
    /// no cycles or power, nor the v-prediction-like loss.
    /// </summary>
    internal static IEnumerable<KeyValuePair<string, string>> TrainingSettingsMetadata(LoraTrainingOptions options)
    {
        static string Bool(bool value) => value ? "True" : "False";
        static string Optional(double? value) => value is { } v ? IO.PythonFloats.Repr(v) : "None";
        var loss = LossSettings.For(options);
        yield return new("ss_optimizer", OptimizerChoice.KohyaName(options.Optimizer, options.OptimizerArguments));
        yield return new("ss_lr_scheduler", OptimizerChoice.OwnLearningRate(options.Optimizer, options.OptimizerArguments)
            ? $"adafactor:{IO.PythonFloats.Repr(options.LearningRate)}"
            : LearningRateScheduleSettings.Name(options.LearningRateSchedule));
        yield return new("ss_lr_warmup_steps", options.WarmupRatio is { } ratio && options.LearningRateSchedule != LearningRateSchedule.Constant
            ? IO.PythonFloats.Repr(ratio)
            : LearningRateScheduleSettings.EffectiveWarmupSteps(options).ToString(System.Globalization.CultureInfo.InvariantCulture));
        yield return new("ss_max_grad_norm", IO.PythonFloats.Repr(options.MaxGradNorm));
        yield return new("ss_noise_offset", Optional(options.NoiseOffset > 0 ? options.NoiseOffset : null));
        yield return new("ss_min_snr_gamma", Optional(options.MinSnrGamma));
        yield return new("ss_loss_type", LossSettings.Name(loss.Type));
        yield return new("ss_huber_schedule", LossSettings.Name(loss.HuberSchedule));
        yield return new("ss_huber_c", IO.PythonFloats.Repr(loss.HuberC));
        yield return new("ss_huber_scale", IO.PythonFloats.Repr(LossSettings.HuberScale));
        yield return new("ss_debiased_estimation", Bool(options.DebiasedEstimation));
        yield return new("ss_ip_noise_gamma", Optional(options.IpNoiseGamma));
        yield return new("ss_zero_terminal_snr", Bool(options.ZeroTerminalSnr));
        // sd-scripts writes str(args.x): "None" when the option is not given (one 77-token window, the last layer).
        yield return new("ss_max_token_length", options.MaxTokenLength == LoraTrainingOptions.Defaults.MaxTokenLength
            ? "None" : options.MaxTokenLength.ToString(System.Globalization.CultureInfo.InvariantCulture));
        yield return new("ss_clip_skip", options.ClipSkip == 1 ? "None" : options.ClipSkip.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }
}
