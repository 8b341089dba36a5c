using System.Runtime.CompilerServices;

namespace StableLora.Tests.Infrastructure;

/// <summary>
/// Installs the CPU kernel guard before any test runs, as StableLora does before its first CPU computation, so that
/// tests that build layers directly also run on kernels that are right on this machine.
/// </summary>
internal static class KernelGuardSetup
{
    [ModuleInitializer]
    internal static void InstallGuard()
    {
        var report = CpuKernels.EnsureChecked();
        if (report.Defects.Count > 0)
            Console.WriteLine($"CPU kernel guard on {report.Cpu}: {report.Defects.Count} wrong result(s), fallback {report.Fallback}, still wrong {report.RemainingDefects.Count}");
    }
}
