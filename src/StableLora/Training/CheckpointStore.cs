using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using StableLora.IO;
using StableLora.Lora;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// Training checkpoints in <c>output/checkpoint-step-N/</c>. Each is written into a hidden temporary folder and
/// renamed into place only when complete, so a process killed at any moment leaves only complete checkpoints (and
/// perhaps a stale temporary folder, removed on the next start). A checkpoint holds:
/// <list type="bullet">
/// <item><c>lora_kohya.safetensors</c> — the LoRA at this step for AUTOMATIC1111 / ComfyUI, and <c>lora_weights.pt</c>
/// in the diffusers attention-processor format when that format can hold the network;</item>
/// <item><c>training_state.safetensors</c> — the exact LoRA parameters (keyed by module key,
/// <c>lora.unet.&lt;path&gt;.lora_down.weight</c>), AdamW moments and RNG states, for resuming;</item>
/// <item><c>trainer_state.json</c> — step, epoch, data position, schedule and loss-scaler state;</item>
/// <item><c>options.json</c> — the resolved training options.</item>
/// </list>
/// </summary>
internal sealed class CheckpointStore
{
    public const string FolderPrefix = "checkpoint-step-";
    public const string LoraFile = "lora_weights.pt";
    public const string KohyaLoraFile = "lora_kohya.safetensors";
    public const string StateFile = "training_state.safetensors";
    public const string TrainerStateFile = "trainer_state.json";
    public const string OptionsFile = "options.json";
    public const string LatestCheckpoint = "latest";
    private const string TemporaryPrefix = ".tmp-checkpoint-";
    private const string DeletingPrefix = ".deleting-";
    private const string OldInfix = ".old-";
    private const string LoraParameterPrefix = "lora.";
    private const string OptimizerPrefix = "optimizer.";
    private const string EmaPrefix = "ema.";
    private const string GeneratorKey = "rng.noise_generator";
    private const string GlobalRngKey = "rng.torch_global";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    public CheckpointStore(string outputDirectory)
    {
        OutputDirectory = Path.GetFullPath(outputDirectory);
    }

    public string OutputDirectory { get; }

    public string PathFor(long step) => Path.Combine(OutputDirectory, FolderPrefix + step.ToString(CultureInfo.InvariantCulture));

    /// <summary>
    /// Cleans up after a process killed while saving: removes temporary checkpoint folders and half-written files,
    /// puts back a checkpoint whose replacement was interrupted between its two renames, and finishes interrupted deletions.
    /// </summary>
    public void RemoveStaleTemporaries()
    {
        if (!Directory.Exists(OutputDirectory))
            return;
        foreach (var stale in Directory.EnumerateDirectories(OutputDirectory, TemporaryPrefix + "*")
                     .Concat(Directory.EnumerateDirectories(OutputDirectory, DeletingPrefix + "*")))
            TryDelete(stale);
        foreach (var old in Directory.EnumerateDirectories(OutputDirectory, FolderPrefix + "*" + OldInfix + "*"))
        {
            string original = old[..old.LastIndexOf(OldInfix, StringComparison.Ordinal)];
            if (!Directory.Exists(original) && File.Exists(Path.Combine(old, TrainerStateFile)))
                Directory.Move(old, original);
            else
                TryDelete(old);
        }

        AtomicFile.RemoveStaleTemporaries(OutputDirectory);
    }

    /// <summary>Complete checkpoints, oldest first.</summary>
    public IReadOnlyList<(long Step, string Path)> List()
    {
        if (!Directory.Exists(OutputDirectory))
            return Array.Empty<(long, string)>();
        return Directory.EnumerateDirectories(OutputDirectory, FolderPrefix + "*")
            .Select(path => (Ok: long.TryParse(Path.GetFileName(path)[FolderPrefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out long step), Step: step, Path: path))
            .Where(c => c.Ok && File.Exists(Path.Combine(c.Path, TrainerStateFile)))
            .OrderBy(c => c.Step)
            .Select(c => (c.Step, c.Path))
            .ToList();
    }

    /// <summary>The checkpoint folder named by "latest" (the newest here; null when there is none yet) or a path.</summary>
    public string? Resolve(string resumeFrom)
    {
        if (string.Equals(resumeFrom, LatestCheckpoint, StringComparison.OrdinalIgnoreCase))
        {
            var all = List();
            return all.Count > 0 ? all[^1].Path : null;
        }

        string path = Path.GetFullPath(resumeFrom);
        if (!File.Exists(Path.Combine(path, TrainerStateFile)))
            throw new InvalidModelFileException(path, TrainerStateFile, "not a complete StableLora checkpoint folder");
        return path;
    }

    public string Save(Checkpoint checkpoint, int? keepLast)
    {
        Directory.CreateDirectory(OutputDirectory);
        string final = PathFor(checkpoint.State.Step);
        string temporary = Path.Combine(OutputDirectory, $"{TemporaryPrefix}{checkpoint.State.Step}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temporary);
        try
        {
            if (LoraFileWriter.CannotHoldInSeedFormat(checkpoint.LoraModules) is null)
                LoraFileWriter.Write(Path.Combine(temporary, LoraFile), checkpoint.LoraModules, LoraFileFormat.AttnProcs);
            LoraFileWriter.Write(Path.Combine(temporary, KohyaLoraFile), checkpoint.LoraModules, LoraFileFormat.Kohya, checkpoint.KohyaMetadata);

            var tensors = new List<KeyValuePair<string, Tensor>>();
            tensors.AddRange(checkpoint.LoraParameters.Select(p => new KeyValuePair<string, Tensor>(LoraParameterPrefix + p.Key, p.Value)));
            tensors.AddRange(checkpoint.OptimizerState.Select(p => new KeyValuePair<string, Tensor>(OptimizerPrefix + p.Key, p.Value)));
            if (checkpoint.EmaState is { } ema)
                tensors.AddRange(ema.Select(p => new KeyValuePair<string, Tensor>(EmaPrefix + p.Key, p.Value)));
            tensors.Add(new(GeneratorKey, checkpoint.NoiseGeneratorState));
            tensors.Add(new(GlobalRngKey, checkpoint.GlobalRngState));
            SafetensorsWriter.Write(Path.Combine(temporary, StateFile), tensors);

            AtomicFile.WriteAllText(Path.Combine(temporary, OptionsFile), JsonSerializer.Serialize(checkpoint.Options, Json));
            // Written last: its presence marks a complete checkpoint even before the folder is renamed.
            AtomicFile.WriteAllText(Path.Combine(temporary, TrainerStateFile), JsonSerializer.Serialize(checkpoint.State, Json));

            ReplaceDirectory(temporary, final);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }

        if (keepLast is { } keep)
        {
            foreach (var (_, path) in List().SkipLast(keep))
                DeleteCheckpoint(path);
        }

        return final;
    }

    public LoadedCheckpoint Load(string directory)
    {
        var state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(Path.Combine(directory, TrainerStateFile)), Json)
                    ?? throw new InvalidModelFileException(Path.Combine(directory, TrainerStateFile), null, "empty trainer state");
        var reader = SafetensorsReader.Open(Path.Combine(directory, StateFile));
        return new LoadedCheckpoint(directory, state, reader, LoraParameterPrefix, OptimizerPrefix, GeneratorKey, GlobalRngKey, EmaPrefix);
    }

    /// <summary>
    /// The options whose values differ between the run that wrote <paramref name="directory"/> (its
    /// <c>options.json</c>) and <paramref name="now"/>, as "Name: old -> new"; empty when the file is missing or
    /// unreadable (older checkpoints). Where to resume from and where to write are left out.
    /// </summary>
    public static IReadOnlyList<(string Option, string Before, string Now)> ChangedOptions(string directory, LoraTrainingOptions now)
    {
        System.Text.Json.Nodes.JsonObject? before;
        try
        {
            before = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(directory, OptionsFile))) as System.Text.Json.Nodes.JsonObject;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            return Array.Empty<(string, string, string)>();
        }

        if (before is null)
            return Array.Empty<(string, string, string)>();
        var current = (System.Text.Json.Nodes.JsonObject)System.Text.Json.Nodes.JsonNode.Parse(JsonSerializer.Serialize(now, Json))!;
        var ignored = new HashSet<string>(StringComparer.Ordinal) { nameof(LoraTrainingOptions.ResumeFrom), nameof(LoraTrainingOptions.OutputDirectory) };
        return current.Where(p => !ignored.Contains(p.Key) && before.ContainsKey(p.Key))
            .Select(p => (p.Key, Before: before[p.Key]?.ToJsonString() ?? "null", Now: p.Value?.ToJsonString() ?? "null"))
            .Where(c => c.Before != c.Now)
            .ToList();
    }

    private static void ReplaceDirectory(string source, string target)
    {
        if (!Directory.Exists(target))
        {
            Directory.Move(source, target);
            return;
        }

        // A checkpoint of this step exists (a resumed run passing it again): swap, then drop the old one.
        string old = target + OldInfix + Guid.NewGuid().ToString("N");
        Directory.Move(target, old);
        Directory.Move(source, target);
        TryDelete(old);
    }

    /// <summary>Renames first, so that a kill during the deletion never leaves a half-deleted checkpoint under its real name.</summary>
    private void DeleteCheckpoint(string path)
    {
        string doomed = Path.Combine(OutputDirectory, DeletingPrefix + Path.GetFileName(path) + "-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.Move(path, doomed);
        }
        catch (IOException)
        {
            return;
        }
        catch (UnauthorizedAccessException)
        {
            return;
        }

        TryDelete(doomed);
    }

    private static void TryDelete(string path)
    {
        try
        {
            if (Directory.Exists(path))
                Directory.Delete(path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>What the trainer hands the store to save.</summary>
internal sealed record Checkpoint(
    TrainerState State,
    LoraTrainingOptions Options,
    IReadOnlyList<LoraModuleWeights> LoraModules,
    IReadOnlyList<KeyValuePair<string, Tensor>> LoraParameters,
    IReadOnlyList<KeyValuePair<string, Tensor>> OptimizerState,
    Tensor NoiseGeneratorState,
    Tensor GlobalRngState,
    LoraExportMetadata? KohyaMetadata = null,
    IReadOnlyList<KeyValuePair<string, Tensor>>? EmaState = null);

/// <summary>
/// The scalar state of a run: the loop advances its position and losses (the settable members), and a checkpoint
/// writes a copy completed with the optimizer's, scaler's and EMA's counters (<c>trainer_state.json</c>).
/// </summary>
internal sealed record TrainerState
{
    public long Step { get; set; }
    public int Epoch { get; set; }
    public int EpochPosition { get; set; }
    public long SchedulerSteps { get; set; }
    public double SmoothedLoss { get; set; }
    public double LastLoss { get; set; }
    public long OptimizerSteps { get; init; }

    /// <summary>The optimizer whose state the checkpoint holds; null in checkpoints from before there was a choice (AdamW).</summary>
    public OptimizerType? Optimizer { get; init; }

    /// <summary>With an EMA of the LoRA weights: its update count (its weights are in the state file); null: no EMA.</summary>
    public long? EmaUpdates { get; init; }
    public double LossScale { get; init; }
    public int LossScaleGoodSteps { get; init; }
    public ulong Seed { get; init; }
    public int Rank { get; init; }
    public double Alpha { get; init; }
    public string Format { get; init; } = "StableLora checkpoint 1";
}

/// <summary>A checkpoint opened for resuming; tensors are read on demand.</summary>
internal sealed class LoadedCheckpoint(string directory, TrainerState state, SafetensorsReader reader,
    string loraPrefix, string optimizerPrefix, string generatorKey, string globalRngKey, string emaPrefix) : IDisposable
{
    public string Directory { get; } = directory;

    public TrainerState State { get; } = state;

    /// <summary>
    /// A LoRA parameter by its name (<c>unet.&lt;path&gt;.lora_down.weight</c>); checkpoints written before LoRA lived on
    /// the layers named the attention-processor format's parameters by processor (<c>&lt;path&gt;.processor.to_q_lora.down.weight</c>),
    /// which is read too.
    /// </summary>
    public Tensor? ReadLoraParameter(string name) => Read(loraPrefix + name) ?? (LegacyName(name) is { } legacy ? Read(loraPrefix + legacy) : null);

    private static string? LegacyName(string name)
    {
        foreach (var (suffix, legacy) in new[] { (".lora_down.weight", ".down.weight"), (".lora_up.weight", ".up.weight") })
        {
            if (name.EndsWith(suffix, StringComparison.Ordinal) && name[..^suffix.Length] is var key && LoraKeyNames.IsAttentionProjection(key))
                return LoraKeyNames.ToAttnProcs(key) + legacy;
        }

        return null;
    }

    /// <summary>An optimizer tensor (<c>&lt;parameter name&gt;.exp_avg</c> / <c>.exp_avg_sq</c>), with the old layout's parameter names read too.</summary>
    public Tensor? ReadOptimizerTensor(string name)
    {
        if (Read(optimizerPrefix + name) is { } tensor)
            return tensor;
        foreach (string moment in new[] { ".exp_avg_sq", ".exp_avg" })
        {
            if (name.EndsWith(moment, StringComparison.Ordinal) && LegacyName(name[..^moment.Length]) is { } legacy)
                return Read(optimizerPrefix + legacy + moment);
        }

        return null;
    }

    /// <summary>An EMA weight by its LoRA parameter's name, or null.</summary>
    public Tensor? ReadEmaTensor(string name) => Read(emaPrefix + name);

    public Tensor NoiseGeneratorState => Read(generatorKey) ?? throw new InvalidModelFileException(reader.Path, generatorKey, "missing from the checkpoint");

    public Tensor GlobalRngState => Read(globalRngKey) ?? throw new InvalidModelFileException(reader.Path, globalRngKey, "missing from the checkpoint");

    public void Dispose() => reader.Dispose();

    private Tensor? Read(string key) => reader.Find(key) is null ? null : reader.Read(key);
}
