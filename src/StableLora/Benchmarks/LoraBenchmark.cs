using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.AttentionProcessors;
using StableLora.Layers;
using StableLora.Lora;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.TextEncoder;
using StableLora.Training;
using StableLora.Unet;
using StableLora.Vae;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Benchmarks;

/// <summary>
/// Measures StableLora's LoRA training step (the same code the trainer runs), generation and the VAE on models with
/// random weights built in memory, the way <c>bench_diffusers.py</c> measures diffusers: warm-up, then the median and
/// spread of timed repetitions, images per second, peak memory, and model FLOPs against the device's peak.
/// </summary>
internal static class LoraBenchmark
{
    /// <summary>Runs every measurement <paramref name="options"/> asks for. A task that fails is reported, not thrown.</summary>
    /// <param name="options">What to measure.</param>
    /// <param name="log">Receives a line per finished measurement.</param>
    public static BenchmarkReport Run(BenchmarkOptions options, IProgress<string>? log = null)
    {
        var device = DeviceSpec.Resolve(options.Device);
        if (device.type == DeviceType.CPU)
            ReportKernels(CpuKernels.EnsureChecked(), log);
        if (device.type == DeviceType.CUDA)
        {
            backends.cuda.enable_flash_sdp(options.FlashAttention);
            using var warmUp = zeros(1, device: device);
            DeviceMemory.RecordCudaBaseline();
        }
        var (peak, peakSource) = options.PeakTflops is { } given ? (given, "given") : MeasureMatmulPeak(device);
        var measurements = new List<BenchmarkMeasurement>();
        foreach (string dtypeName in options.DTypes)
        {
            var dtype = BenchmarkDTypes.Parse(dtypeName);
            using var models = BenchmarkModels.Create(options.Architecture, device, dtype);
            foreach (int batch in options.BatchSizes)
            {
                foreach (string mode in options.Modes)
                {
                    Record(measurements, log, $"train-{mode}", dtypeName, batch, options, () => TrainStep(models, options, dtypeName, batch, mode, peak));
                }

                if (options.Vae)
                {
                    Record(measurements, log, "vae-encode", dtypeName, batch, options, () => VaeTask(models, options, dtypeName, batch, encode: true, peak));
                    Record(measurements, log, "vae-decode", dtypeName, batch, options, () => VaeTask(models, options, dtypeName, batch, encode: false, peak));
                }

                if (options.Generation && models.Pipeline is null)
                    log?.Report("generation skipped: the tiny architecture's text encoder has a 1,000-token vocabulary, not CLIP's");
                else if (options.Generation)
                    Record(measurements, log, "generate", dtypeName, batch, options, () => GenerationTask(models, options, dtypeName, batch, peak));
            }
        }

        string deviceName = device.type == DeviceType.CUDA ? $"{device} ({DeviceMemory.GpuName() ?? "CUDA"})" : "cpu";
        return new BenchmarkReport(DateTimeOffset.Now, MachineDescription(), deviceName, options.Architecture.ToString(), peak, peakSource, measurements);
    }

    private static void ReportKernels(CpuKernelReport report, IProgress<string>? log)
    {
        if (report.Fallback != CpuKernelFallback.None || report.Defects.Count > 0)
            log?.Report($"CPU kernels on {report.Cpu}: {report.Defects.Count} wrong result(s); fallback {report.Fallback}; still wrong: {report.RemainingDefects.Count}");
    }

    private static void Record(List<BenchmarkMeasurement> measurements, IProgress<string>? log, string task, string dtype, int batch,
        BenchmarkOptions options, Func<BenchmarkMeasurement> measure)
    {
        BenchmarkMeasurement result;
        try
        {
            result = measure();
        }
        catch (Exception e) when (e is ExternalException or InvalidOperationException or OutOfMemoryException or ArgumentException)
        {
            result = new BenchmarkMeasurement(task, dtype, batch, options.Resolution, 0, 0, 0, 0, 0, null, null, null, null, e.Message.Split('\n')[0]);
        }

        measurements.Add(result);
        log?.Report(result.Error is null
            ? $"{result.Task} {result.DType} batch {result.BatchSize} @{result.Resolution}px: {result.MedianMs:F1} ms ({result.ImagesPerSecond:F2} img/s)"
            : $"{task} {dtype} batch {batch} failed: {result.Error}");
    }

    private static BenchmarkMeasurement TrainStep(BenchmarkModels models, BenchmarkOptions options, string dtypeName, int batch, string mode, double peak)
    {
        bool checkpointing = mode.EndsWith("+gc", StringComparison.Ordinal);
        string stepKind = checkpointing ? mode[..^3] : mode;
        bool full = stepKind == "full";
        if (!full && stepKind != "unet")
            throw new ArgumentException($"unknown mode '{mode}' (expected unet, full, unet+gc or full+gc)");
        var device = models.Device;
        using var generator = new Generator(1234, CPU);
        var networkOptions = new LoraNetworkOptions { Preset = options.Preset, Rank = 4, ConvRank = options.ConvRank, TextEncoder = options.TrainTextEncoder };
        using var network = LoraNetwork.Create(new AdaptableModels(models.Unet, options.TrainTextEncoder ? models.TextEncoder : null), networkOptions, generator);
        network.Attach();
        models.Unet.train();
        models.Unet.GradientCheckpointing = checkpointing;
        try
        {
            var parameters = network.NamedParameters().ToList();
            using var optimizer = new AdamWOptimizer(parameters, new AdamWSettings(), flat: options.FlatOptimizer);
            var scaler = models.DType == ScalarType.Float16 ? new LossScaler() : null;
            var step = new LoraStep(models.Unet, models.Vae, models.NoiseScheduler, PredictionKind.Epsilon, new LoraStepSettings(0, null, 1.0),
                parameters.Select(p => p.Parameter).ToList(), optimizer, scaler);

            int latentSide = options.Resolution / models.Vae.Config.ScaleFactor;
            using var inputs = NewDisposeScope();
            var pixels = rand(new long[] { batch, 3, options.Resolution, options.Resolution }, generator: generator).Times(2.0).Minus(1.0).to(device);
            var ids = randint(0, models.TextEncoder.Config.VocabSize, new long[] { batch, 77 }, int64, CPU, generator: generator).to(device);
            var latents = randn(new long[] { batch, 4, latentSide, latentSide }, generator: generator).to(device);
            var conditioning = randn(new long[] { batch, 77, models.TextEncoder.Config.HiddenSize }, generator: generator).to(models.DType).to(device);

            Tensor Text()
            {
                if (network.AdaptsTextEncoder)
                    return models.TextEncoder.Forward(ids).LastHiddenState.to(models.DType);
                using var noGrad = no_grad();
                return models.TextEncoder.Forward(ids).LastHiddenState;
            }

            void RunStep()
            {
                using var scope = NewDisposeScope();
                if (full)
                {
                    var moments = step.Encode(pixels);
                    step.ForwardBackward(moments, Text(), generator, scaler?.Scale ?? 1.0);
                }
                else
                {
                    step.ForwardBackwardLatents(latents, network.AdaptsTextEncoder ? Text() : conditioning, generator, scaler?.Scale ?? 1.0);
                }

                step.Update(1e-4);
            }

            double flops = CountFlops(models, () =>
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                models.Unet.Forward(latents.to(models.DType), tensor(new long[batch]).to(device), conditioning);
            }) * 2;
            if (full)
            {
                flops += CountFlops(models, () =>
                {
                    using var scope = NewDisposeScope();
                    using var noGrad = no_grad();
                    models.Vae.EncoderOutput(pixels.to(models.Vae.Spec.DType));
                    models.TextEncoder.Forward(ids);
                });
            }

            return Time($"train-{mode}", dtypeName, batch, options, RunStep, flops, peak, device);
        }
        finally
        {
            network.Detach();
            models.Unet.GradientCheckpointing = false;
            models.Unet.eval();
        }
    }

    private static BenchmarkMeasurement VaeTask(BenchmarkModels models, BenchmarkOptions options, string dtypeName, int batch, bool encode, double peak)
    {
        using var generator = new Generator(7, CPU);
        using var inputs = NewDisposeScope();
        var vae = models.Vae;
        int latentSide = options.Resolution / vae.Config.ScaleFactor;
        var pixels = rand(new long[] { batch, 3, options.Resolution, options.Resolution }, generator: generator).to(vae.Spec.DType).to(models.Device);
        var latents = randn(new long[] { batch, 4, latentSide, latentSide }, generator: generator).to(vae.Spec.DType).to(models.Device);
        void Run()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            if (encode)
                vae.Encode(pixels);
            else
                vae.Decode(latents);
        }

        double flops = CountFlops(models, Run);
        return Time(encode ? "vae-encode" : "vae-decode", dtypeName, batch, options, Run, flops, peak, models.Device);
    }

    private static BenchmarkMeasurement GenerationTask(BenchmarkModels models, BenchmarkOptions options, string dtypeName, int batch, double peak)
    {
        if (models.Tokenizer is null)
            throw new InvalidOperationException("generation needs the CLIP vocabulary, which this architecture's text encoder does not use");
        using var generator = StableDiffusionGenerator.FromPretrained("benchmark").WithScheduler(SchedulerKind.DpmSolverMultistep).BuildOver(models.Pipeline!);
        var generation = new GenerationOptions
        {
            Width = options.Resolution,
            Height = options.Resolution,
            Steps = options.GenerationSteps,
            GuidanceScale = 7.5,
            ImageCount = batch,
            Seed = 1,
        };
        void Run()
        {
            using var result = generator.Generate("a sketch of a lighthouse on a cliff", generation);
        }

        double flops = CountFlops(models, () =>
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            int side = options.Resolution / models.Vae.Config.ScaleFactor;
            models.Unet.Forward(zeros(new long[] { 2 * batch, 4, side, side }, models.DType, models.Device), tensor(500L).to(models.Device),
                zeros(new long[] { 2 * batch, 77, models.TextEncoder.Config.HiddenSize }, models.DType, models.Device));
        }) * options.GenerationSteps;
        return Time("generate", dtypeName, batch, options with { Warmup = 1, Iterations = Math.Max(1, options.Iterations / 5) }, Run, flops, peak, models.Device);
    }

    private static BenchmarkMeasurement Time(string task, string dtypeName, int batch, BenchmarkOptions options, Action run, double flops, double peak, Device device)
    {
        for (int i = 0; i < options.Warmup; i++)
            run();
        Synchronize(device);
        var memory = new DeviceMemory(device);
        var times = new List<double>();
        for (int i = 0; i < options.Iterations; i++)
        {
            var watch = Stopwatch.StartNew();
            run();
            Synchronize(device);
            times.Add(watch.Elapsed.TotalMilliseconds);
            memory.Sample();
        }

        times.Sort();
        double median = times.Count % 2 == 1 ? times[times.Count / 2] : (times[times.Count / 2 - 1] + times[times.Count / 2]) / 2;
        double tflops = flops / (median / 1000) / 1e12;
        return new BenchmarkMeasurement(task, dtypeName, batch, options.Resolution, times.Count, median, times[0], times[^1], batch / (median / 1000),
            memory.Peak, flops, tflops, peak > 0 ? tflops / peak : null);
    }

    private static double CountFlops(BenchmarkModels models, Action forward)
    {
        using var counter = FlopCounter.Attach(models.Unet, models.Vae, models.TextEncoder);
        forward();
        return counter.Flops;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA)
            cuda.synchronize(device);
    }

    private static (double Tflops, string Source) MeasureMatmulPeak(Device device)
    {
        using var scope = NewDisposeScope();
        const int Size = 2048;
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        var a = randn(new long[] { Size, Size }, dtype, device);
        var b = randn(new long[] { Size, Size }, dtype, device);
        a.matmul(b);
        Synchronize(device);
        int repetitions = device.type == DeviceType.CUDA ? 200 : 5;
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < repetitions; i++)
            a.matmul(b).Dispose();
        Synchronize(device);
        double tflops = 2.0 * Size * Size * Size * repetitions / watch.Elapsed.TotalSeconds / 1e12;
        return (tflops, $"measured: {(dtype == ScalarType.Float32 ? "fp32" : "bf16")} {Size}^3 matmul");
    }

    private static string MachineDescription()
    {
        string cpu = "unknown CPU";
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (line is not null)
                cpu = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException)
        {
        }

        return $"{cpu}, {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, libtorch threads {get_num_threads()}";
    }
}

/// <summary>Random-weight models of one architecture, built in memory on the device.</summary>
internal sealed class BenchmarkModels : IDisposable
{
    private BenchmarkModels(Device device, ScalarType dtype, UNet2DConditionModel unet, AutoencoderKL vae, ClipTextModel textEncoder,
        ClipTokenizer? tokenizer, SchedulerConfig schedulerConfig)
    {
        Device = device;
        DType = dtype;
        Unet = unet;
        Vae = vae;
        TextEncoder = textEncoder;
        Tokenizer = tokenizer;
        NoiseScheduler = new DdpmScheduler(schedulerConfig);
        Pipeline = tokenizer is null ? null : StableDiffusionModel.FromComponents("benchmark", unet, vae, textEncoder, tokenizer, schedulerConfig);
    }

    public Device Device { get; }

    public ScalarType DType { get; }

    public UNet2DConditionModel Unet { get; }

    public AutoencoderKL Vae { get; }

    public ClipTextModel TextEncoder { get; }

    public ClipTokenizer? Tokenizer { get; }

    public DdpmScheduler NoiseScheduler { get; }

    public StableDiffusionModel? Pipeline { get; }

    public static BenchmarkModels Create(BenchmarkArchitecture architecture, Device device, ScalarType dtype)
    {
        var (unetConfig, vaeConfig, textConfig) = Configs(architecture);
        // The VAE computes in float32 under fp16, as the trainer keeps it (SD's VAE overflows in fp16).
        var vaeDtype = dtype == ScalarType.Float16 ? ScalarType.Float32 : dtype;
        var unet = Build(new UNet2DConditionModel(unetConfig, new TensorSpec(device, dtype)), 1);
        var vae = Build(new AutoencoderKL(vaeConfig, new TensorSpec(device, vaeDtype)), 2);
        var text = Build(new ClipTextModel(textConfig, new TensorSpec(device, dtype)), 3);
        var tokenizer = textConfig.VocabSize == 49408 ? TokenizerFiles.BuiltIn.Load() : null;
        var scheduler = SchedulerConfig.FromJson(Sd15Presets.Json("scheduler"), "built-in SD 1.5 scheduler config");
        return new BenchmarkModels(device, dtype, unet, vae, text, tokenizer, scheduler);
    }

    public void Dispose()
    {
        NoiseScheduler.Dispose();
        Unet.Dispose();
        Vae.Dispose();
        TextEncoder.Dispose();
    }

    private static T Build<T>(T model, ulong seed) where T : nn.Module
    {
        ModelInitializer.InitializeRandom(model, seed);
        foreach (var parameter in model.parameters())
            parameter.requires_grad = false;
        model.eval();
        return model;
    }

    private static (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) Configs(BenchmarkArchitecture architecture) => architecture switch
    {
        BenchmarkArchitecture.Sd15 => (Sd15Presets.Unet, Sd15Presets.Vae, Sd15Presets.TextEncoder),
        BenchmarkArchitecture.Mid => (
            Sd15Presets.Unet with { BlockOutChannels = new[] { 128, 256, 512, 512 }, CrossAttentionDim = 512 },
            Sd15Presets.Vae with { BlockOutChannels = new[] { 64, 128, 256, 256 } },
            Sd15Presets.TextEncoder with { HiddenSize = 512, IntermediateSize = 2048, NumHiddenLayers = 6, NumAttentionHeads = 8 }),
        _ => (
            UNet2DConditionConfig.FromJson("""
                {"sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": [32, 64, 64, 64],
                 "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                 "attention_head_dim": 2, "cross_attention_dim": 32, "norm_num_groups": 8}
                """, "bench_diffusers.py --tiny unet"),
            AutoencoderKLConfig.FromJson("""
                {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "act_fn": "silu", "block_out_channels": [16, 32, 32, 32],
                 "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
                 "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
                 "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 128, "scaling_factor": 0.18215}
                """, "bench_diffusers.py --tiny vae"),
            ClipTextConfig.FromJson("""
                {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
                """, "bench_diffusers.py --tiny text encoder")),
    };
}

/// <summary>Peak memory during a task: the process's peak resident set on the CPU, device memory in use on CUDA.</summary>
internal sealed class DeviceMemory
{
    private readonly Device _device;

    public DeviceMemory(Device device)
    {
        _device = device;
        if (device.type == DeviceType.CPU)
            ResetCpuPeak();
        Sample();
    }

    public long? Peak { get; private set; }

    private static long s_cudaBaseline;

    /// <summary>Remembers the device memory in use before any model exists (the CUDA context), which peaks leave out.</summary>
    public static void RecordCudaBaseline() => s_cudaBaseline = CudaUsedBytes() ?? 0;

    public void Sample()
    {
        long? now = _device.type == DeviceType.CUDA ? CudaUsedBytes() - s_cudaBaseline : CpuPeakBytes();
        if (now is { } value)
            Peak = Math.Max(Peak ?? 0, value);
    }

    public static string? GpuName()
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo("nvidia-smi", "--query-gpu=name --format=csv,noheader") { RedirectStandardOutput = true });
            string? name = process?.StandardOutput.ReadLine();
            process?.WaitForExit(5000);
            return string.IsNullOrWhiteSpace(name) ? null : name.Trim();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return null;
        }
    }

    private static void ResetCpuPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static long? CpuPeakBytes()
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            return line is null ? null : long.Parse(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException)
        {
            return null;
        }
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int CudaMemGetInfo(out ulong free, out ulong total);

    private static long? CudaUsedBytes()
    {
        foreach (var name in new[] { "libcudart.so", "libcudart.so.13", "libcudart.so.12" })
        {
            if (NativeLibrary.TryLoad(name, out var library) && NativeLibrary.TryGetExport(library, "cudaMemGetInfo", out var address))
            {
                var memGetInfo = Marshal.GetDelegateForFunctionPointer<CudaMemGetInfo>(address);
                if (memGetInfo(out ulong free, out ulong total) == 0)
                    return (long)(total - free);
            }
        }

        return null;
    }
}
