using System.Globalization;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Pipeline;

/// <summary>Parses and resolves the device names users give: "auto", "cpu", "cuda", "cuda:N".</summary>
internal static class DeviceSpec
{
    public static bool TryParse(string? text, out (DeviceType Type, int Index, bool Auto) device)
    {
        device = default;
        if (string.IsNullOrWhiteSpace(text))
            return false;
        string value = text.Trim().ToLowerInvariant();
        switch (value)
        {
            case "auto":
                device = (DeviceType.CPU, -1, true);
                return true;
            case "cpu":
                device = (DeviceType.CPU, -1, false);
                return true;
            case "cuda":
            case "gpu":
                device = (DeviceType.CUDA, 0, false);
                return true;
        }

        if (value.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(value.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out int index))
        {
            device = (DeviceType.CUDA, index, false);
            return true;
        }

        return false;
    }

    /// <summary>The device to use; "auto" picks CUDA when available. Asking for CUDA where there is none is an error that says so.</summary>
    public static Device Resolve(string text)
    {
        if (!TryParse(text, out var parsed))
            throw new ArgumentException($"device '{text}' is not one of auto, cpu, cuda, cuda:N", nameof(text));
        if (parsed.Auto)
            return cuda.is_available() ? CUDA : CPU;
        if (parsed.Type == DeviceType.CPU)
            return CPU;
        if (!cuda.is_available())
            throw new InvalidOperationException(
                $"device '{text}' was asked for but CUDA is not available: no CUDA libtorch is loaded or no GPU is visible. " +
                "Reference a CUDA build of libtorch (see README, GPU) or use the CPU (device \"cpu\").");
        if (parsed.Index >= cuda.device_count())
            throw new InvalidOperationException($"device '{text}' was asked for but only {cuda.device_count()} CUDA device(s) are visible");
        return new Device(DeviceType.CUDA, parsed.Index);
    }

    /// <summary>
    /// <see cref="Resolve"/> for a device StableLora is about to compute on: on the CPU, the kernel guard
    /// (<see cref="CpuKernels.EnsureChecked"/>) runs first, once per process.
    /// </summary>
    public static Device ResolveForCompute(string text, Microsoft.Extensions.Logging.ILogger logger)
    {
        var device = Resolve(text);
        if (device.type == DeviceType.CPU)
            CpuKernels.EnsureChecked(logger);
        return device;
    }

    /// <summary>Whether the device computes in bfloat16 (probed with a small matmul; old GPUs lack it).</summary>
    public static bool SupportsBFloat16(Device device)
    {
        try
        {
            using var scope = NewDisposeScope();
            var a = ones(new long[] { 8, 8 }, ScalarType.BFloat16, device);
            return a.matmul(a).sum().to(ScalarType.Float32).cpu().item<float>() == 512f;
        }
        catch (Exception e) when (e is ExternalException or InvalidOperationException)
        {
            return false;
        }
    }
}
