using System.Diagnostics;
using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;
using StableLora.Layers;

namespace StableLora.Kernels;

/// <summary>The process-wide switches the guard can turn; tests substitute fakes.</summary>
internal interface IKernelSwitches
{
    /// <summary>Turns libtorch's oneDNN (and NNPACK) CPU kernels off; false when that is not possible in this process.</summary>
    bool TryDisableOneDnn();

    /// <summary>Routes every CPU convolution through the matrix product.</summary>
    void UseMatrixProductConvolutions();
}

/// <summary>The real switches: libtorch's oneDNN flag and StableLora's convolution route.</summary>
internal sealed class LibTorchSwitches : IKernelSwitches
{
    public static readonly LibTorchSwitches Instance = new();

    public bool TryDisableOneDnn()
    {
        if (!LibTorchContext.OneDnn.TrySet(false))
            return false;
        LibTorchContext.Nnpack.TrySet(false);
        return true;
    }

    public void UseMatrixProductConvolutions() => CpuConvolution.MatrixProductEverywhere = true;
}

/// <summary>
/// Checks libtorch's CPU kernels once per process before StableLora first computes on the CPU, and when one is wrong,
/// switches to a path that is right: first libtorch's own convolution without oneDNN (the defect found so far is in
/// oneDNN's AVX2 / AVX-512 convolution kernels), then, if that is not possible or not enough, every CPU convolution as
/// one matrix product. Each switch is verified by checking again.
/// </summary>
internal static class CpuKernelGuard
{
    private static readonly object Gate = new();
    private static CpuKernelReport? _report;

    /// <summary>The report of the check this process ran, or null before it ran.</summary>
    public static CpuKernelReport? Report
    {
        get
        {
            lock (Gate)
                return _report;
        }
    }

    /// <summary>Runs the check (once per process; later calls return the first report).</summary>
    public static CpuKernelReport Ensure(CpuKernelCheck configured, ILogger logger)
    {
        lock (Gate)
        {
            if (_report is not null)
                return _report;
            var mode = EffectiveMode(configured, Environment.GetEnvironmentVariable(CpuKernels.EnvironmentVariable));
            _report = Evaluate(mode, () => new KernelCheck().Run(), LibTorchSwitches.Instance, CpuDescription.Current, logger);
            return _report;
        }
    }

    /// <summary>The mode in force: the environment variable, when set, overrides the program's choice.</summary>
    public static CpuKernelCheck EffectiveMode(CpuKernelCheck configured, string? environmentValue)
    {
        if (string.IsNullOrWhiteSpace(environmentValue))
            return configured;
        return environmentValue.Trim().ToLowerInvariant() switch
        {
            "on" or "check" or "1" or "true" => CpuKernelCheck.On,
            "off" or "0" or "false" => CpuKernelCheck.Off,
            "fallback" => CpuKernelCheck.Fallback,
            _ => throw new InvalidOptionsException(new[]
            {
                new OptionError(CpuKernels.EnvironmentVariable, environmentValue, "must be on, off or fallback"),
            }),
        };
    }

    /// <summary>The decision itself, with the check and the switches passed in.</summary>
    public static CpuKernelReport Evaluate(CpuKernelCheck mode, Func<IReadOnlyList<KernelDefect>> check, IKernelSwitches switches, string cpu, ILogger logger)
    {
        var clock = Stopwatch.StartNew();
        if (mode == CpuKernelCheck.Off)
            return new CpuKernelReport { Mode = mode, Cpu = cpu };

        if (mode == CpuKernelCheck.Fallback)
        {
            var forced = switches.TryDisableOneDnn() ? CpuKernelFallback.OneDnnDisabled : UseMatrixProduct(switches);
            Log.CpuKernelFallbackForced(logger, Describe(forced));
            return new CpuKernelReport { Mode = mode, Cpu = cpu, Fallback = forced };
        }

        var defects = check();
        if (defects.Count == 0)
        {
            Log.CpuKernelsRight(logger, cpu, clock.Elapsed.TotalMilliseconds);
            return new CpuKernelReport { Mode = mode, Cpu = cpu, Checked = true, CheckTime = clock.Elapsed };
        }

        var fallback = CpuKernelFallback.None;
        IReadOnlyList<KernelDefect> remaining = defects;
        if (switches.TryDisableOneDnn())
        {
            fallback = CpuKernelFallback.OneDnnDisabled;
            remaining = check();
        }

        if (remaining.Any(d => d.Kernel.StartsWith("convolution", StringComparison.Ordinal)))
        {
            fallback = UseMatrixProduct(switches);
            remaining = check();
        }

        var report = new CpuKernelReport
        {
            Mode = mode,
            Cpu = cpu,
            Checked = true,
            Defects = defects.Select(d => d.ToString()).ToList(),
            Fallback = fallback,
            RemainingDefects = remaining.Select(d => d.ToString()).ToList(),
            CheckTime = clock.Elapsed,
        };
        string found = Summarise(defects);
        if (remaining.Count == 0)
            Log.CpuKernelsWrong(logger, cpu, found, Describe(fallback));
        else
            Log.CpuKernelsStillWrong(logger, cpu, found, Describe(fallback), Summarise(remaining));
        return report;
    }

    private static CpuKernelFallback UseMatrixProduct(IKernelSwitches switches)
    {
        switches.UseMatrixProductConvolutions();
        return CpuKernelFallback.MatrixProductConvolutions;
    }

    private static string Describe(CpuKernelFallback fallback) => fallback switch
    {
        CpuKernelFallback.OneDnnDisabled => "turned libtorch's oneDNN kernels off for this process (its other convolution kernels are used)",
        CpuKernelFallback.MatrixProductConvolutions => "routed every CPU convolution through a matrix product over unfolded patches",
        _ => "found no path that is right",
    };

    private static string Summarise(IReadOnlyList<KernelDefect> defects)
    {
        const int Shown = 3;
        var kinds = defects.Select(d => d.Kernel).Distinct().ToList();
        string first = string.Join("; ", defects.Take(Shown));
        return $"{defects.Count} wrong result(s) of {string.Join(", ", kinds)}, e.g. {first}";
    }
}
