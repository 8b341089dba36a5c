using System.Globalization;
using System.Text;
using StableLora.AttentionProcessors;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Benchmarks;

/// <summary>One precision's comparison against the float32 CPU reference.</summary>
/// <param name="DType">The precision checked on the device.</param>
/// <param name="UnetRelativeError">max |device − cpu| / max |cpu| of one UNet forward (no LoRA).</param>
/// <param name="LossRelativeErrors">|device − cpu| / cpu of each step's loss.</param>
/// <param name="GradientCosine">Cosine similarity of the first step's LoRA gradients (all parameters, flattened).</param>
/// <param name="GradientNormRatio">The first step's gradient norm on the device / on the CPU.</param>
/// <param name="Tolerance">The relative tolerance this precision is held to.</param>
/// <param name="Passed">Whether every figure is within tolerance (cosine ≥ 1 − tolerance).</param>
internal sealed record DeviceCheckResult(string DType, double UnetRelativeError, IReadOnlyList<double> LossRelativeErrors,
    double GradientCosine, double GradientNormRatio, double Tolerance, bool Passed);

/// <summary>
/// Correctness before speed: a few LoRA training steps of the tiny architecture on a device, in a given precision,
/// against the same steps in float32 on the CPU (same weights, same inputs, same noise: every random draw is made on
/// the CPU).
/// </summary>
internal static class DeviceCheck
{
    /// <summary>Runs the check for each precision; fp32 on CUDA runs with TF32 off so that it is held to 1e-4.</summary>
    /// <param name="device">The device to check ("cuda", "cuda:1", "cpu").</param>
    /// <param name="dtypes">fp32, bf16 and/or fp16.</param>
    /// <param name="steps">Training steps to compare.</param>
    public static IReadOnlyList<DeviceCheckResult> Run(string device, IReadOnlyList<string> dtypes, int steps = 4)
    {
        var target = DeviceSpec.Resolve(device);
        CpuKernels.EnsureChecked();
        var reference = Trace(CPU, ScalarType.Float32, steps);
        var results = new List<DeviceCheckResult>();
        foreach (string name in dtypes)
        {
            var dtype = BenchmarkDTypes.Parse(name);
            bool tf32 = target.type == DeviceType.CUDA && backends.cuda.matmul.allow_tf32;
            bool cudnnTf32 = target.type == DeviceType.CUDA && backends.cudnn.allow_tf32;
            if (target.type == DeviceType.CUDA)
            {
                backends.cuda.matmul.allow_tf32 = false;
                backends.cudnn.allow_tf32 = false;
            }

            StepTrace trace;
            try
            {
                trace = Trace(target, dtype, steps);
            }
            finally
            {
                if (target.type == DeviceType.CUDA)
                {
                    backends.cuda.matmul.allow_tf32 = tf32;
                    backends.cudnn.allow_tf32 = cudnnTf32;
                }
            }

            // bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%), fp16 11; errors add up over a few dozen layers.
            double tolerance = dtype switch { ScalarType.BFloat16 => 5e-2, ScalarType.Float16 => 1e-2, _ => 1e-4 };
            double unetError = MaxRelative(trace.UnetOutput, reference.UnetOutput);
            var lossErrors = trace.Losses.Zip(reference.Losses, (a, b) => Math.Abs(a - b) / Math.Abs(b)).ToList();
            double cosine = Cosine(trace.Gradients, reference.Gradients);
            double normRatio = Norm(trace.Gradients) / Norm(reference.Gradients);
            bool passed = unetError <= tolerance && lossErrors.All(e => e <= tolerance) && cosine >= 1 - tolerance
                && Math.Abs(normRatio - 1) <= tolerance;
            results.Add(new DeviceCheckResult(name, unetError, lossErrors, cosine, normRatio, tolerance, passed));
        }

        return results;
    }

    /// <summary>The results as lines of text.</summary>
    public static string Describe(IEnumerable<DeviceCheckResult> results)
    {
        var text = new StringBuilder();
        foreach (var r in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"{(r.Passed ? "PASS" : "FAIL")} {r.DType}: UNet rel. error {r.UnetRelativeError:E2}, step losses rel. error max {r.LossRelativeErrors.Max():E2} " +
                $"({string.Join(", ", r.LossRelativeErrors.Select(e => e.ToString("E1", CultureInfo.InvariantCulture)))}), " +
                $"LoRA gradient cosine {r.GradientCosine:F6}, norm ratio {r.GradientNormRatio:F5} (tolerance {r.Tolerance:G2})");
        }

        return text.ToString();
    }

    private sealed record StepTrace(float[] UnetOutput, List<double> Losses, float[] Gradients);

    private static StepTrace Trace(Device device, ScalarType dtype, int steps)
    {
        using var models = BenchmarkModels.Create(BenchmarkArchitecture.Tiny, device, dtype);
        using var inputs = NewDisposeScope();
        using var generator = new Generator(99, CPU);
        const int Batch = 2, Resolution = 64;
        var pixels = rand(new long[] { Batch, 3, Resolution, Resolution }, generator: generator).Times(2.0).Minus(1.0);
        var ids = randint(0, models.TextEncoder.Config.VocabSize, new long[] { Batch, 77 }, int64, CPU, generator: generator);
        var probe = randn(new long[] { Batch, 4, 8, 8 }, generator: generator);

        float[] unetOutput;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var text = models.TextEncoder.Forward(ids.to(device)).LastHiddenState;
            var output = models.Unet.Forward(probe.to(device).to(dtype), tensor(new long[] { 10, 700 }).to(device), text);
            unetOutput = output.to(float32).cpu().data<float>().ToArray();
        }

        using var loraGenerator = new Generator(1234, CPU);
        using var network = Lora.LoraNetwork.Create(new Lora.AdaptableModels(models.Unet, null), new Lora.LoraNetworkOptions { Rank = 4 }, loraGenerator, new TensorSpec(device, ScalarType.Float32));
        network.Attach();
        models.Unet.train();
        var parameters = network.NamedParameters().ToList();
        using var optimizer = new AdamWOptimizer(parameters, new AdamWSettings());
        var scaler = dtype == ScalarType.Float16 ? new LossScaler() : null;
        var step = new LoraStep(models.Unet, models.Vae, models.NoiseScheduler, PredictionKind.Epsilon, new LoraStepSettings(0, null, 1.0),
            parameters.Select(p => p.Parameter).ToList(), optimizer, scaler);
        using var noise = new Generator(7, CPU);
        var losses = new List<double>();
        float[]? gradients = null;
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            var moments = step.Encode(pixels);
            Tensor text;
            using (no_grad())
                text = models.TextEncoder.Forward(ids.to(device)).LastHiddenState;
            double scale = scaler?.Scale ?? 1.0;
            losses.Add(step.ForwardBackward(moments, text, noise, scale));
            gradients ??= cat(parameters.Select(p => p.Parameter.grad!.flatten().to(float32).cpu().DividedBy(scale)).ToList()).data<float>().ToArray();
            step.Update(1e-3);
        }

        network.Detach();
        return new StepTrace(unetOutput, losses, gradients!);
    }

    private static double MaxRelative(float[] actual, float[] expected)
    {
        double maxError = 0, maxValue = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxError = Math.Max(maxError, Math.Abs(actual[i] - expected[i]));
            maxValue = Math.Max(maxValue, Math.Abs(expected[i]));
        }

        return maxError / maxValue;
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0;
        for (int i = 0; i < a.Length; i++)
            dot += (double)a[i] * b[i];
        return dot / (Norm(a) * Norm(b));
    }

    private static double Norm(float[] values) => Math.Sqrt(values.Sum(v => (double)v * v));
}

/// <summary>The precision names the benchmark and check take.</summary>
internal static class BenchmarkDTypes
{
    public static ScalarType Parse(string name) => name.ToLowerInvariant() switch
    {
        "fp32" => ScalarType.Float32,
        "bf16" => ScalarType.BFloat16,
        "fp16" => ScalarType.Float16,
        _ => throw new ArgumentException($"dtype '{name}': expected fp32, bf16 or fp16"),
    };
}
