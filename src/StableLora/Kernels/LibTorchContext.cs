using System.Runtime.InteropServices;

namespace StableLora.Kernels;

/// <summary>
/// Two of libtorch's process-wide backend switches on <c>at::globalContext()</c>: oneDNN (MKL-DNN) and NNPACK, which
/// <c>torch.backends.mkldnn.enabled</c> and <c>torch.backends.nnpack.set_flags</c> set in Python. TorchSharp does
/// not expose them; libtorch exports them, so they are called through their mangled C++ names. Both are read on every
/// convolution, so a change takes effect at once, unlike oneDNN's own <c>DNNL_MAX_CPU_ISA</c>, which is read only at
/// oneDNN's first use.
/// </summary>
internal static class LibTorchContext
{
    private static readonly string[] LibraryNames = { "libtorch_cpu", "torch_cpu" };

    // Itanium C++ ABI names (Linux, macOS), then MSVC's (Windows; not verified on a Windows machine).
    private static readonly string[] ContextNames = { "_ZN2at13globalContextEv", "?globalContext@at@@YAAEAVContext@1@XZ" };

    private static readonly Lazy<IntPtr> Library = new(LoadLibrary);
    private static readonly Lazy<ContextFunction?> Context = new(() => Bind<ContextFunction>(ContextNames));

    /// <summary>oneDNN's switch; with it off, libtorch convolves with its own kernels.</summary>
    public static readonly BackendFlag OneDnn = new(
        new[] { "_ZNK2at7Context17userEnabledMkldnnEv", "?userEnabledMkldnn@Context@at@@QEBA_NXZ" },
        new[] { "_ZN2at7Context20setUserEnabledMkldnnEb", "?setUserEnabledMkldnn@Context@at@@QEAAX_N@Z" });

    /// <summary>
    /// NNPACK's switch. Where oneDNN is off, libtorch tries NNPACK for some convolutions, and on a CPU that NNPACK does
    /// not support it prints "Could not initialize NNPACK" at every one; the guard turns it off with oneDNN.
    /// </summary>
    public static readonly BackendFlag Nnpack = new(
        new[] { "_ZNK2at7Context17userEnabledNNPACKEv", "?userEnabledNNPACK@Context@at@@QEBA_NXZ" },
        new[] { "_ZN2at7Context20setUserEnabledNNPACKEb", "?setUserEnabledNNPACK@Context@at@@QEAAX_N@Z" });

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate IntPtr ContextFunction();

    // A C++ member function takes `this` as its first argument in the platform's C calling convention (x64).
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void SetterFunction(IntPtr self, [MarshalAs(UnmanagedType.U1)] bool enabled);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    [return: MarshalAs(UnmanagedType.U1)]
    private delegate bool GetterFunction(IntPtr self);

    /// <summary>One boolean of libtorch's global context.</summary>
    internal sealed class BackendFlag(string[] getterNames, string[] setterNames)
    {
        private readonly Lazy<(GetterFunction Get, SetterFunction Set)?> _entry = new(() =>
            Context.Value is not null && Bind<GetterFunction>(getterNames) is { } get && Bind<SetterFunction>(setterNames) is { } set ? (get, set) : null);

        /// <summary>Whether the switch could be found in this process.</summary>
        public bool IsAvailable => _entry.Value is not null;

        /// <summary>The switch's state (true when it cannot be read: libtorch's default).</summary>
        public bool Enabled => _entry.Value is not { } entry || entry.Get(Context.Value!());

        /// <summary>Sets the switch for the whole process; false when it is not available.</summary>
        public bool TrySet(bool enabled)
        {
            if (_entry.Value is not { } entry)
                return false;
            entry.Set(Context.Value!(), enabled);
            return true;
        }
    }

    private static T? Bind<T>(string[] names) where T : Delegate
    {
        if (Library.Value == IntPtr.Zero)
            return null;
        foreach (string name in names)
        {
            if (NativeLibrary.TryGetExport(Library.Value, name, out var address))
                return Marshal.GetDelegateForFunctionPointer<T>(address);
        }

        return null;
    }

    private static IntPtr LoadLibrary()
    {
        foreach (string name in LibraryNames)
        {
            if (NativeLibrary.TryLoad(name, typeof(LibTorchContext).Assembly, DllImportSearchPath.SafeDirectories | DllImportSearchPath.AssemblyDirectory, out var handle)
                || NativeLibrary.TryLoad(name, out handle))
                return handle;
        }

        return IntPtr.Zero;
    }
}
