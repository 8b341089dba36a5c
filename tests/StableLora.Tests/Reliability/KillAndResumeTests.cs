using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using StableLora.Data;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using Xunit.Abstractions;

namespace StableLora.Tests.Reliability;

/// <summary>
/// A real training process (the sample CLI on the tiny fixture model, CPU, fp32, a checkpoint every step) killed
/// with SIGKILL at random moments and resumed with <c>--resume latest</c> each time: during start-up and model
/// loading, in the middle of a step, and while a checkpoint is being written. After every kill each checkpoint folder
/// must be complete and readable; the final LoRA must equal, byte for byte, that of a run never interrupted.
/// <c>STABLELORA_LONG_FAULTS=1</c> runs the longer version (200 kills).
/// </summary>
public sealed class KillAndResumeTests(ITestOutputHelper output)
{
    private static bool LongRun => Environment.GetEnvironmentVariable("STABLELORA_LONG_FAULTS") == "1";

    /// <summary>
    /// How long a training process may go without writing a new checkpoint (it writes one every step) before it counts
    /// as stuck. Waits are bounded by progress, not by total time, so a slow or busy machine only makes the test
    /// longer, while a process that hangs still fails it.
    /// </summary>
    private static readonly TimeSpan StallLimit = TimeSpan.FromMinutes(4);

    private enum KillMoment
    {
        AnyTimeAfterStart,
        MidStep,
        WhileSavingACheckpoint,
    }

    [Theory]
    [InlineData("adamw")]
    [InlineData("prodigy")]
    public void KillsAtRandomMomentsThenResumingGivesTheUninterruptedLoraBitForBit(string optimizer)
    {
        // 20 kills with AdamW; 6 with Prodigy (two of each kind), whose extra state rides the same checkpoint code, to keep the suite's time.
        int kills = LongRun ? 200 : optimizer == "adamw" ? 20 : 6;
        int maxSteps = LongRun ? 900 : 60;
        using var temp = new TempDirectory();
        string data = temp.File("data");
        SketchImageGenerator.Generate(data, count: 4, size: 24, seed: 5);

        var clock = Stopwatch.StartNew();
        string straight = temp.File("straight/output"); // same folder name: the kohya metadata records it
        var (startUp, perStep) = RunToCompletionMeasuringPace(Arguments(data, straight, maxSteps, optimizer), straight, maxSteps);
        var straightTime = clock.Elapsed;
        // Random kills land anywhere from the start to three steps into training, on a fast machine or a slow one.
        double anyTimeWindowMs = (startUp + 3 * perStep).TotalMilliseconds;

        string killed = temp.File("killed/output");
        var random = new Random(20261127);
        var moments = new Dictionary<KillMoment, int>();
        int killsLeavingTemporaries = 0;
        long stepsLost = 0;
        for (int kill = 0; kill < kills; kill++)
        {
            long latestBefore = LatestStep(killed);
            var moment = kills < 20 ? (KillMoment)(kill % 3) : (KillMoment)random.Next(3);
            using var process = CliProcess.Start(Arguments(data, killed, maxSteps, optimizer));
            bool killedInTime = moment switch
            {
                KillMoment.AnyTimeAfterStart => KillAfter(process, TimeSpan.FromMilliseconds(random.NextDouble() * anyTimeWindowMs)),
                KillMoment.MidStep => KillWhen(process, () => LatestStep(killed) > latestBefore, TimeSpan.FromMilliseconds(random.Next(0, 40))),
                _ => KillWhen(process, () => HasTemporaryCheckpoint(killed), TimeSpan.Zero),
            };
            Assert.True(killedInTime, $"kill {kill} ({moment}): the run ended before it could be killed ({process.Output}); raise maxSteps");
            moments[moment] = moments.GetValueOrDefault(moment) + 1;
            if (HasTemporaryCheckpoint(killed) || (Directory.Exists(killed) && Directory.EnumerateFiles(killed, ".*.tmp").Any()))
                killsLeavingTemporaries++;
            long latestAfter = AssertEveryCheckpointIsComplete(killed);
            Assert.True(latestAfter >= latestBefore, $"kill {kill}: the latest checkpoint went back from step {latestBefore} to {latestAfter}");
            stepsLost += Math.Max(0, latestAfter - latestBefore);
        }

        long resumedFrom = LatestStep(killed);
        RunToCompletion(Arguments(data, killed, maxSteps, optimizer), killed);
        AssertEveryCheckpointIsComplete(killed);
        Assert.Empty(Directory.EnumerateFileSystemEntries(killed, ".*"));

        output.WriteLine($"{kills} kills ({string.Join(", ", moments.OrderBy(m => m.Key).Select(m => $"{m.Key} {m.Value}"))}); "
                         + $"{killsLeavingTemporaries} left a half-written checkpoint or file behind; {stepsLost} steps were checkpointed between kills; "
                         + $"the last resume started at step {resumedFrom} of {maxSteps}; straight run {straightTime.TotalSeconds:F1} s (start-up {startUp.TotalSeconds:F1} s, "
                         + $"{perStep.TotalMilliseconds:F0} ms a step), all {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var file in new[] { "lora_weights.pt", "lora_kohya.safetensors" })
            Assert.True(File.ReadAllBytes(Path.Combine(straight, file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(killed, file))),
                $"{file} of the killed-and-resumed run differs from the straight run's");
        Assert.True(moments.Count == 3, "every kind of kill moment was tried");
        Assert.True(killsLeavingTemporaries > 0, "at least one kill landed while a checkpoint was being written");
    }

    /// <summary>The training command; with Prodigy (issue 15, item 2) its d, d_max, d_numerator, k, p0 and s must survive the kills too.</summary>
    private static string[] Arguments(string data, string outputDirectory, int maxSteps, string optimizer) =>
    [
        "train", "--model", FixturePaths.TinyPipeline, "--data", data, "--output", outputDirectory, "--resolution", "16", "--batch-size", "2",
        "--max-steps", maxSteps.ToString(CultureInfo.InvariantCulture), "--warmup-steps", "5", "--checkpoint-every", "1",
        "--device", "cpu", "--seed", "11", "--resume", "latest",
        .. optimizer == "prodigy" ? new[] { "--optimizer", "prodigy", "--lr", "1", "--optimizer-args", "weight_decay=0.01" } : new[] { "--lr", "1e-3" },
    ];

    private static void RunToCompletion(string[] arguments, string outputDirectory)
    {
        using var process = CliProcess.Start(arguments);
        WaitWhileProgressing(process, outputDirectory, _ => { });
        Assert.True(process.ExitCode == 0, $"exit code {process.ExitCode}: {process.Output}");
    }

    /// <summary>Runs to the end, noting when the first checkpoint appeared: the start-up time and the time per step.</summary>
    private static (TimeSpan StartUp, TimeSpan PerStep) RunToCompletionMeasuringPace(string[] arguments, string outputDirectory, int maxSteps)
    {
        var clock = Stopwatch.StartNew();
        using var process = CliProcess.Start(arguments);
        TimeSpan? firstCheckpoint = null;
        WaitWhileProgressing(process, outputDirectory, step => firstCheckpoint ??= step >= 1 ? clock.Elapsed : null);
        var total = clock.Elapsed;
        Assert.True(process.ExitCode == 0, $"exit code {process.ExitCode}: {process.Output}");
        var startUp = firstCheckpoint ?? total;
        return (startUp, (total - startUp) / Math.Max(1, maxSteps - 1));
    }

    /// <summary>Waits for the process to exit, failing when it writes no new checkpoint for <see cref="StallLimit"/>.</summary>
    private static void WaitWhileProgressing(CliProcess process, string outputDirectory, Action<long> onStep)
    {
        var sinceProgress = Stopwatch.StartNew();
        long latest = -1;
        while (!process.WaitForExit(TimeSpan.FromMilliseconds(5)))
        {
            long step = LatestStep(outputDirectory);
            if (step != latest)
            {
                latest = step;
                sinceProgress.Restart();
                onStep(step);
            }

            if (sinceProgress.Elapsed > StallLimit)
            {
                process.Kill();
                Assert.Fail($"the training process wrote no checkpoint for {StallLimit.TotalMinutes} minutes (latest step {latest}); it looks stuck: {process.Output}");
            }
        }
    }

    private static bool KillAfter(CliProcess process, TimeSpan delay)
    {
        if (process.WaitForExit(delay))
            return false;
        process.Kill();
        return true;
    }

    /// <summary>
    /// Polls <paramref name="condition"/> every millisecond, then kills <paramref name="delay"/> after it holds; false
    /// when the process exits first. Every condition waited for comes with the next step, so a wait past
    /// <see cref="StallLimit"/> means the process is stuck.
    /// </summary>
    private static bool KillWhen(CliProcess process, Func<bool> condition, TimeSpan delay)
    {
        var limit = Stopwatch.StartNew();
        while (!condition())
        {
            if (process.HasExited)
                return false;
            if (limit.Elapsed > StallLimit)
            {
                process.Kill();
                Assert.Fail($"the training process made no step for {StallLimit.TotalMinutes} minutes; it looks stuck: {process.Output}");
            }

            Thread.Sleep(1);
        }

        return KillAfter(process, delay);
    }

    private static bool HasTemporaryCheckpoint(string outputDirectory) =>
        Directory.Exists(outputDirectory) && Directory.EnumerateDirectories(outputDirectory, ".tmp-checkpoint-*").Any();

    private static long LatestStep(string outputDirectory) =>
        new CheckpointStore(outputDirectory).List().Select(c => c.Step).DefaultIfEmpty(0).Max();

    /// <summary>
    /// Every folder named like a checkpoint is one: its trainer state names its step, every tensor of its training
    /// state reads, its LoRA loads and its options parse. Returns the newest step.
    /// </summary>
    private static long AssertEveryCheckpointIsComplete(string outputDirectory)
    {
        if (!Directory.Exists(outputDirectory))
            return 0;
        long latest = 0;
        foreach (var folder in Directory.EnumerateDirectories(outputDirectory, CheckpointStore.FolderPrefix + "*"))
        {
            string suffix = Path.GetFileName(folder)[CheckpointStore.FolderPrefix.Length..];
            if (!long.TryParse(suffix, NumberStyles.None, CultureInfo.InvariantCulture, out long step))
            {
                Assert.Contains(".old-", suffix, StringComparison.Ordinal); // a replaced checkpoint, removed on the next start
                continue;
            }

            using (var trainerState = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, CheckpointStore.TrainerStateFile))))
                Assert.Equal(step, trainerState.RootElement.GetProperty("Step").GetInt64());
            using (JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, CheckpointStore.OptionsFile))))
            {
            }

            using (var state = SafetensorsReader.Open(Path.Combine(folder, CheckpointStore.StateFile)))
            {
                Assert.NotEmpty(state.Tensors);
                foreach (var info in state.Tensors)
                    state.Read(info.Name).Dispose();
            }

            using (var lora = LoraWeights.Load(Path.Combine(folder, CheckpointStore.LoraFile)))
                Assert.True(lora.ModuleCount > 0);
            latest = Math.Max(latest, step);
        }

        return latest;
    }
}
