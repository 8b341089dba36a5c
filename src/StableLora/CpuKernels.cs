using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Kernels;

namespace StableLora;

/// <summary>
/// Whether StableLora checks libtorch's CPU kernels before it first computes on the CPU. libtorch 2.10's oneDNN
/// convolution computes wrong numbers, even NaN from memory it never wrote, on some CPUs (AMD Zen 5 with AVX2 and
/// AVX-512 kernels); docs/troubleshooting.md has the details.
/// </summary>
public enum CpuKernelCheck
{
    /// <summary>Check once per process; when a kernel is wrong, switch to a path that is right and log a warning (the default).</summary>
    On,

    /// <summary>Neither check nor switch: libtorch's kernels as they are.</summary>
    Off,

    /// <summary>Do not check; switch to the fallback path unconditionally (oneDNN off, or convolutions as matrix products).</summary>
    Fallback,
}

/// <summary>What the kernel guard did.</summary>
public enum CpuKernelFallback
{
    /// <summary>Nothing: libtorch's kernels are used as they are.</summary>
    None,

    /// <summary>libtorch's oneDNN kernels were turned off for the process (as <c>torch.backends.mkldnn.enabled = False</c>).</summary>
    OneDnnDisabled,

    /// <summary>Every CPU convolution runs as one matrix product over unfolded patches.</summary>
    MatrixProductConvolutions,
}

/// <summary>The outcome of the CPU kernel check.</summary>
public sealed record CpuKernelReport
{
    /// <summary>The mode that was in force (the environment variable, when set, overrides <see cref="CpuKernels.Mode"/>).</summary>
    public CpuKernelCheck Mode { get; init; }

    /// <summary>The CPU, e.g. "AMD EPYC (family 26, model 2; avx2 avx512f avx512_bf16)".</summary>
    public string Cpu { get; init; } = "";

    /// <summary>Whether the kernels were checked.</summary>
    public bool Checked { get; init; }

    /// <summary>The wrong results the first check found (kernel, shapes, relative error); empty when all were right.</summary>
    public IReadOnlyList<string> Defects { get; init; } = Array.Empty<string>();

    /// <summary>The path switched to.</summary>
    public CpuKernelFallback Fallback { get; init; }

    /// <summary>Wrong results still found after the switch; empty when the path in use is right.</summary>
    public IReadOnlyList<string> RemainingDefects { get; init; } = Array.Empty<string>();

    /// <summary>How long the check (and any re-checks) took.</summary>
    public TimeSpan CheckTime { get; init; }
}

/// <summary>
/// The CPU kernel guard. StableLora calls <see cref="EnsureChecked"/> itself before the first CPU training step,
/// generation or benchmark of a process; call it earlier to choose when its cost (tens of milliseconds) is paid.
/// </summary>
public static class CpuKernels
{
    /// <summary>
    /// The environment variable that overrides <see cref="Mode"/>: <c>on</c>, <c>off</c> or <c>fallback</c>. Read
    /// when the check runs.
    /// </summary>
    public const string EnvironmentVariable = "STABLELORA_CPU_KERNEL_CHECK";

    /// <summary>The mode the next check runs in (default <see cref="CpuKernelCheck.On"/>). Setting it after the check ran changes nothing.</summary>
    public static CpuKernelCheck Mode { get; set; } = CpuKernelCheck.On;

    /// <summary>The report of the check this process ran, or <see langword="null"/> before it ran.</summary>
    public static CpuKernelReport? Report => CpuKernelGuard.Report;

    /// <summary>Checks the CPU kernels and switches to a right path if needed; runs once per process, later calls return the first report.</summary>
    /// <param name="logger">Receives the warning when a kernel is wrong.</param>
    /// <exception cref="InvalidOptionsException">The environment variable holds a value other than on, off or fallback.</exception>
    public static CpuKernelReport EnsureChecked(ILogger? logger = null) => CpuKernelGuard.Ensure(Mode, logger ?? NullLogger.Instance);
}
