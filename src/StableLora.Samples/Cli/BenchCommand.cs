using System.CommandLine;
using StableLora.Benchmarks;

namespace StableLora.Samples.Cli;

/// <summary>
/// <c>stablelora bench</c>: the training step, generation and the VAE on random-weight models of a chosen size,
/// optionally after a correctness check of the device against the float32 CPU path. Figures go to the console as a
/// Markdown table and, with <c>--json</c>, to a file.
/// </summary>
internal sealed class BenchCommand
{
    private readonly Option<string> _arch = new("--arch") { Description = "tiny (bench_diffusers.py --tiny), mid or sd15", DefaultValueFactory = _ => "tiny" };
    private readonly Option<string> _device = new("--device") { Description = "auto, cpu, cuda or cuda:N", DefaultValueFactory = _ => "auto" };
    private readonly Option<string> _dtypes = new("--dtypes") { Description = "Comma list of fp32, bf16, fp16", DefaultValueFactory = _ => "fp32" };
    private readonly Option<string> _batchSizes = new("--batch-sizes") { Description = "Comma list of batch sizes", DefaultValueFactory = _ => "1" };
    private readonly Option<int> _resolution = new("--resolution") { Description = "Image size in pixels", DefaultValueFactory = _ => 64 };
    private readonly Option<string> _modes = new("--modes") { Description = "Comma list of training-step modes: unet (precomputed latents and text), full, unet+gc, full+gc (gradient checkpointing); empty for none", DefaultValueFactory = _ => "unet,full" };
    private readonly Option<int> _warmup = new("--warmup") { Description = "Untimed repetitions first", DefaultValueFactory = _ => 3 };
    private readonly Option<int> _iters = new("--iters") { Description = "Timed repetitions", DefaultValueFactory = _ => 10 };
    private readonly Option<bool> _generation = new("--generation") { Description = "Also time a text-to-image call (DPM-Solver++ 2M, CFG 7.5)" };
    private readonly Option<int> _generationSteps = new("--generation-steps") { Description = "Denoising steps of that call", DefaultValueFactory = _ => 20 };
    private readonly Option<bool> _vae = new("--vae") { Description = "Also time VAE encode and decode" };
    private readonly Option<bool> _noFlash = new("--no-flash-sdp") { Description = "Keep attention off its flash kernel (CUDA), to measure what it brings" };
    private readonly Option<bool> _plainOptimizer = new("--per-parameter-adamw") { Description = "Update each LoRA parameter separately instead of as one flat buffer, to measure what that brings" };
    private readonly Option<double?> _peak = new("--peak-tflops") { Description = "The device's peak TFLOP/s for the efficiency column (default: measured with a matmul)" };
    private readonly Option<string?> _check = new("--check") { Description = "First compare a few tiny training steps on the device in these precisions (comma list) with float32 on the CPU; exit 1 if they differ" };
    private readonly Option<string?> _targets = Parsing.Option<string?>("--targets", "The measured LoRA's UNet layers: attention (default) or kohya");
    private readonly Option<int?> _convRank = Parsing.Option<int?>("--conv-rank", "LoCon: also adapt the convolutions, 3x3 ones at this rank");
    private readonly Option<bool> _trainTextEncoder = Parsing.Option<bool>("--train-text-encoder", "The measured LoRA adapts the text encoder too");
    private readonly Option<string?> _json = new("--json") { Description = "Write the report as JSON to this file" };

    public Command Build(Option<bool> verbose)
    {
        var command = new Command("bench", "Measure the training step, generation and the VAE on random-weight models");
        foreach (var option in new Option[] { _arch, _device, _dtypes, _batchSizes, _resolution, _modes, _warmup, _iters, _generation, _generationSteps, _vae, _noFlash, _plainOptimizer, _targets, _convRank, _trainTextEncoder, _peak, _check, _json })
            command.Options.Add(option);
        command.SetAction((result, cancellationToken) => Cli.RunAsync(result.GetValue(verbose), logger => Task.FromResult(Run(result))));
        return command;
    }

    private int Run(ParseResult result)
    {
        if (result.GetValue(_check) is { } check)
        {
            var outcomes = DeviceCheck.Run(result.GetValue(_device)!, List(check));
            Console.Write(DeviceCheck.Describe(outcomes));
            if (outcomes.Any(o => !o.Passed))
                return ExitCodes.Unexpected;
        }

        var options = new BenchmarkOptions
        {
            Architecture = Enum.Parse<BenchmarkArchitecture>(result.GetValue(_arch)!, ignoreCase: true),
            Device = result.GetValue(_device)!,
            DTypes = List(result.GetValue(_dtypes)!),
            BatchSizes = List(result.GetValue(_batchSizes)!).Select(int.Parse).ToList(),
            Resolution = result.GetValue(_resolution),
            Modes = List(result.GetValue(_modes)!),
            Warmup = result.GetValue(_warmup),
            Iterations = result.GetValue(_iters),
            Generation = result.GetValue(_generation),
            GenerationSteps = result.GetValue(_generationSteps),
            Vae = result.GetValue(_vae),
            FlashAttention = !result.GetValue(_noFlash),
            FlatOptimizer = !result.GetValue(_plainOptimizer),
            PeakTflops = result.GetValue(_peak),
            Preset = result.GetValue(_targets) is { } targets ? Parsing.Targets(targets) is var (preset, patterns) && patterns.Length == 0
                ? preset
                : throw new ArgumentException("--targets for bench: attention or kohya") : LoraPreset.Attention,
            ConvRank = result.GetValue(_convRank),
            TrainTextEncoder = result.GetValue(_trainTextEncoder),
        };
        var progress = new ConsoleLines("[bench] ");
        var report = LoraBenchmark.Run(options, progress);
        Console.WriteLine(report.ToMarkdown());
        if (CpuKernels.Report is { } kernels)
            Console.WriteLine($"CPU kernels on {kernels.Cpu}: check {kernels.Mode}{(kernels.Checked ? $", checked in {kernels.CheckTime.TotalMilliseconds:F0} ms" : "")}, "
                + $"{(kernels.Defects.Count == 0 ? "no defects" : $"{kernels.Defects.Count} defect(s)")}, fallback {kernels.Fallback}");
        if (result.GetValue(_json) is { } json)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(json))!);
            File.WriteAllText(json, report.ToJson());
        }

        return report.Measurements.Any(m => m.Error is not null) ? ExitCodes.Unexpected : ExitCodes.Success;
    }

    private static List<string> List(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    /// <summary>Writes each report to stderr at once (Progress&lt;T&gt; would post it to the thread pool).</summary>
    private sealed class ConsoleLines(string prefix) : IProgress<string>
    {
        public void Report(string value) => Console.Error.WriteLine(prefix + value);
    }
}
