using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace StableLora.Benchmarks;

/// <summary>The model sizes the benchmark builds (random weights, built in memory).</summary>
internal enum BenchmarkArchitecture
{
    /// <summary>The tiny configs of the diffusers reference script (<c>bench_diffusers.py --tiny</c>), for side-by-side CPU runs.</summary>
    Tiny,

    /// <summary>SD 1.5's layout at 2/5 of its width (UNet 128/256/512/512 channels, CLIP 512 wide, 6 layers).</summary>
    Mid,

    /// <summary>The full SD 1.5 UNet, VAE and CLIP text encoder (860 M + 84 M + 123 M parameters).</summary>
    Sd15,
}

/// <summary>What the benchmark measures. Every training measurement is the attention-preset LoRA step (rank 4 on to_q/to_k/to_v/to_out.0).</summary>
internal sealed record BenchmarkOptions
{
    /// <summary>The model size.</summary>
    public BenchmarkArchitecture Architecture { get; init; } = BenchmarkArchitecture.Tiny;

    /// <summary>"auto", "cpu", "cuda" or "cuda:N".</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Precisions to measure: fp32, bf16, fp16 (frozen models; LoRA and optimizer stay fp32).</summary>
    public IReadOnlyList<string> DTypes { get; init; } = new[] { "fp32" };

    /// <summary>Batch sizes to measure.</summary>
    public IReadOnlyList<int> BatchSizes { get; init; } = new[] { 1 };

    /// <summary>Image size in pixels.</summary>
    public int Resolution { get; init; } = 64;

    /// <summary>
    /// Training-step modes: "full" (VAE encode + text encoder every step) and/or "unet" (precomputed latents and text
    /// embeddings), each optionally with "+gc" (gradient checkpointing), as bench_diffusers.py names them.
    /// </summary>
    public IReadOnlyList<string> Modes { get; init; } = new[] { "unet", "full" };

    /// <summary>Untimed steps before measuring.</summary>
    public int Warmup { get; init; } = 3;

    /// <summary>Timed steps.</summary>
    public int Iterations { get; init; } = 10;

    /// <summary>Also time a text-to-image call (DPM-Solver++, classifier-free guidance) of <see cref="GenerationSteps"/> steps.</summary>
    public bool Generation { get; init; }

    /// <summary>Denoising steps of the generation measurement.</summary>
    public int GenerationSteps { get; init; } = 20;

    /// <summary>Also time VAE encode and decode.</summary>
    public bool Vae { get; init; }

    /// <summary>Let scaled-dot-product attention use its flash kernel on CUDA (on by default; off measures what it brings).</summary>
    public bool FlashAttention { get; init; } = true;

    /// <summary>Update the LoRA parameters as one flat buffer (the default; off measures the per-parameter update).</summary>
    public bool FlatOptimizer { get; init; } = true;

    /// <summary>Which UNet layers the measured LoRA adapts.</summary>
    public LoraPreset Preset { get; init; } = LoraPreset.Attention;

    /// <summary>LoCon: the rank of the measured LoRA's 3x3 convolutions (null: no convolutions).</summary>
    public int? ConvRank { get; init; }

    /// <summary>Whether the measured LoRA adapts the text encoder too (its forward then runs with gradients every step).</summary>
    public bool TrainTextEncoder { get; init; }

    /// <summary>Peak TFLOP/s of the device for the efficiency column; null measures a large float32 matmul (CPU) instead.</summary>
    public double? PeakTflops { get; init; }
}

/// <summary>One measured task.</summary>
/// <param name="Task">train-unet, train-full, generate, vae-encode, vae-decode.</param>
/// <param name="DType">fp32, bf16 or fp16.</param>
/// <param name="BatchSize">Images per step/call.</param>
/// <param name="Resolution">Pixels per side.</param>
/// <param name="Iterations">Timed repetitions.</param>
/// <param name="MedianMs">Median milliseconds per repetition.</param>
/// <param name="MinMs">Fastest repetition.</param>
/// <param name="MaxMs">Slowest repetition.</param>
/// <param name="ImagesPerSecond">BatchSize / median.</param>
/// <param name="PeakMemoryBytes">
/// Peak resident memory of the process (CPU), or device memory in use beyond the CUDA context (CUDA: what the caching
/// allocator has reserved, which it keeps, so within one run it never falls; compare with PyTorch's
/// <c>max_memory_reserved</c>).
/// </param>
/// <param name="FlopsPerRepetition">Model FLOPs of one repetition (LoRA convention: 2 x UNet forward for a training step, plus the VAE encoder and text encoder forwards in full mode).</param>
/// <param name="AchievedTflops">FLOPs / median time.</param>
/// <param name="FractionOfPeak">AchievedTflops / the peak.</param>
/// <param name="Error">Why the task could not be measured, or null.</param>
internal sealed record BenchmarkMeasurement(
    string Task, string DType, int BatchSize, int Resolution, int Iterations,
    double MedianMs, double MinMs, double MaxMs, double ImagesPerSecond, long? PeakMemoryBytes,
    double? FlopsPerRepetition, double? AchievedTflops, double? FractionOfPeak, string? Error = null);

/// <summary>All measurements of a run, with the machine they came from.</summary>
/// <param name="Date">When the run started.</param>
/// <param name="Machine">CPU model and core count, OS.</param>
/// <param name="Device">The torch device used (and the GPU name on CUDA).</param>
/// <param name="Architecture">The model size.</param>
/// <param name="PeakTflops">The peak used for the efficiency column.</param>
/// <param name="PeakSource">Where that peak came from.</param>
/// <param name="Measurements">The results.</param>
internal sealed record BenchmarkReport(
    DateTimeOffset Date, string Machine, string Device, string Architecture, double PeakTflops, string PeakSource,
    IReadOnlyList<BenchmarkMeasurement> Measurements)
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, Converters = { new JsonStringEnumConverter() } };

    /// <summary>The report as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>The measurements as a Markdown table.</summary>
    public string ToMarkdown()
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"{Architecture} on {Device} ({Machine}), {Date:yyyy-MM-dd}; peak {PeakTflops:G4} TFLOP/s ({PeakSource})");
        text.AppendLine();
        text.AppendLine("| task | dtype | batch | px | median ms | min–max ms | images/s | peak memory | TFLOP/s | of peak |");
        text.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var m in Measurements)
        {
            if (m.Error is not null)
            {
                text.AppendLine(CultureInfo.InvariantCulture, $"| {m.Task} | {m.DType} | {m.BatchSize} | {m.Resolution} | failed: {m.Error} | | | | | |");
                continue;
            }

            string memory = m.PeakMemoryBytes is { } bytes ? $"{bytes / (1024.0 * 1024 * 1024):F2} GiB" : "—";
            string tflops = m.AchievedTflops is { } t ? t.ToString("G3", CultureInfo.InvariantCulture) : "—";
            string fraction = m.FractionOfPeak is { } f ? f.ToString("P1", CultureInfo.InvariantCulture) : "—";
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {m.Task} | {m.DType} | {m.BatchSize} | {m.Resolution} | {m.MedianMs:F1} | {m.MinMs:F1}–{m.MaxMs:F1} | {m.ImagesPerSecond:F2} | {memory} | {tflops} | {fraction} |");
        }

        return text.ToString();
    }
}
