using Microsoft.Extensions.Logging;
using StableLora.Kernels;
using StableLora.Layers;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Kernels;

/// <summary>The kernel check finds wrong kernels, the guard switches to a right path, and the path in use is right here.</summary>
public sealed class CpuKernelGuardTests
{
    private const string Cpu = "Test CPU (family 26, model 2; avx2 avx512f)";
    private static readonly KernelDefect WrongConvolution = new("convolution", "3x3, 24 -> 40 channels, 12x12, stride 1", 0.19);

    [Fact]
    public void AfterTheGuardEveryCheckedKernelIsRightOnThisMachine()
    {
        var report = CpuKernels.EnsureChecked();
        Assert.True(report.Checked || report.Mode != CpuKernelCheck.On, "the module initializer ran the check");
        var defects = new KernelCheck().Run();
        Assert.True(defects.Count == 0, $"on {report.Cpu} (fallback {report.Fallback}): {string.Join("; ", defects)}");
    }

    [Fact]
    public void TheCheckFindsAConvolutionThatIsOffByLittle()
    {
        Tensor Wrong(Tensor input, Tensor weight, Tensor? bias, long stride, long padding)
        {
            using var scope = NewDisposeScope();
            var right = CpuConvolution.Forward(input, weight, bias, stride, padding);
            // One output channel off by 0.1 %: a kernel that is wrong in one vector lane.
            var mask = ones_like(right);
            mask[TensorIndex.Colon, TensorIndex.Single(1)].fill_(1.001);
            return (right * mask).MoveToOuterDisposeScope();
        }

        var defects = new KernelCheck(Wrong).Run();

        Assert.NotEmpty(defects);
        Assert.All(defects, d => Assert.StartsWith("convolution", d.Kernel));
        Assert.Contains(defects, d => d.Kernel == "convolution" && d.RelativeError > KernelCheck.Tolerance);
        Assert.Contains(defects, d => d.Kernel == "convolution input gradient");
    }

    [Fact]
    public void TheCheckFindsAConvolutionThatReturnsNaN()
    {
        Tensor Broken(Tensor input, Tensor weight, Tensor? bias, long stride, long padding)
        {
            var output = CpuConvolution.Forward(input, weight, bias, stride, padding);
            return input.shape[1] == 24 ? output.Times(double.NaN) : output;
        }

        var defects = new KernelCheck(Broken).Run();

        Assert.Contains(defects, d => d.Kernel == "convolution" && double.IsInfinity(d.RelativeError) && d.Case.Contains("24 -> 40", StringComparison.Ordinal));
        Assert.Contains("not finite", defects[0].ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void WhenTurningOneDnnOffFixesTheKernelsTheGuardDoesThatAndWarnsOnce()
    {
        var switches = new FakeSwitches(canDisableOneDnn: true);
        var logger = new ListLogger();
        var check = new ScriptedCheck(() => switches.OneDnnDisabled ? Array.Empty<KernelDefect>() : new[] { WrongConvolution });

        var report = CpuKernelGuard.Evaluate(CpuKernelCheck.On, check.Run, switches, Cpu, logger);

        Assert.Equal(CpuKernelFallback.OneDnnDisabled, report.Fallback);
        Assert.True(report.Checked);
        Assert.Single(report.Defects);
        Assert.Empty(report.RemainingDefects);
        Assert.False(switches.MatrixProduct);
        Assert.Equal(2, check.Calls);
        var warning = Assert.Single(logger.Entries, e => e.Level >= LogLevel.Warning);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains(Cpu, warning.Message, StringComparison.Ordinal);
        Assert.Contains("convolution (3x3, 24 -> 40 channels", warning.Message, StringComparison.Ordinal);
        Assert.Contains("oneDNN kernels off", warning.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WhenOneDnnCannotBeTurnedOffConvolutionsGoThroughTheMatrixProduct()
    {
        var switches = new FakeSwitches(canDisableOneDnn: false);
        var logger = new ListLogger();
        var check = new ScriptedCheck(() => switches.MatrixProduct ? Array.Empty<KernelDefect>() : new[] { WrongConvolution });

        var report = CpuKernelGuard.Evaluate(CpuKernelCheck.On, check.Run, switches, Cpu, logger);

        Assert.Equal(CpuKernelFallback.MatrixProductConvolutions, report.Fallback);
        Assert.Empty(report.RemainingDefects);
        Assert.True(switches.MatrixProduct);
        Assert.Contains(logger.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("matrix product", StringComparison.Ordinal));
    }

    [Fact]
    public void WhenOneDnnOffIsNotEnoughTheMatrixProductIsTakenToo()
    {
        var switches = new FakeSwitches(canDisableOneDnn: true);
        var check = new ScriptedCheck(() => switches.MatrixProduct ? Array.Empty<KernelDefect>() : new[] { WrongConvolution });

        var report = CpuKernelGuard.Evaluate(CpuKernelCheck.On, check.Run, switches, Cpu, new ListLogger());

        Assert.True(switches.OneDnnDisabled);
        Assert.Equal(CpuKernelFallback.MatrixProductConvolutions, report.Fallback);
        Assert.Empty(report.RemainingDefects);
        Assert.Equal(3, check.Calls);
    }

    [Fact]
    public void WhenNothingHelpsTheGuardReportsWhatIsStillWrongAsAnError()
    {
        var attention = new KernelDefect("attention", "2x3 heads, 77 tokens of 40", 0.5);
        var switches = new FakeSwitches(canDisableOneDnn: true);
        var logger = new ListLogger();

        var report = CpuKernelGuard.Evaluate(CpuKernelCheck.On, () => new[] { attention }, switches, Cpu, logger);

        Assert.Equal(CpuKernelFallback.OneDnnDisabled, report.Fallback);
        Assert.False(switches.MatrixProduct); // only convolutions have a second path
        Assert.Single(report.RemainingDefects);
        var error = Assert.Single(logger.Entries, e => e.Level == LogLevel.Error);
        Assert.Contains("attention (2x3 heads", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RightKernelsAreLeftAsTheyAre()
    {
        var switches = new FakeSwitches(canDisableOneDnn: true);
        var logger = new ListLogger();

        var report = CpuKernelGuard.Evaluate(CpuKernelCheck.On, Array.Empty<KernelDefect>, switches, Cpu, logger);

        Assert.Equal(CpuKernelFallback.None, report.Fallback);
        Assert.True(report.Checked);
        Assert.False(switches.OneDnnDisabled || switches.MatrixProduct);
        Assert.DoesNotContain(logger.Entries, e => e.Level >= LogLevel.Warning);
    }

    [Fact]
    public void OffNeitherChecksNorSwitches_FallbackSwitchesWithoutChecking()
    {
        var switches = new FakeSwitches(canDisableOneDnn: true);
        var check = new ScriptedCheck(() => new[] { WrongConvolution });

        var off = CpuKernelGuard.Evaluate(CpuKernelCheck.Off, check.Run, switches, Cpu, new ListLogger());
        Assert.False(off.Checked);
        Assert.Equal(CpuKernelFallback.None, off.Fallback);
        Assert.False(switches.OneDnnDisabled);

        var forced = CpuKernelGuard.Evaluate(CpuKernelCheck.Fallback, check.Run, switches, Cpu, new ListLogger());
        Assert.False(forced.Checked);
        Assert.Equal(CpuKernelFallback.OneDnnDisabled, forced.Fallback);
        Assert.Equal(0, check.Calls);
    }

    [Theory]
    [InlineData(null, CpuKernelCheck.Off, CpuKernelCheck.Off)]
    [InlineData("", CpuKernelCheck.Fallback, CpuKernelCheck.Fallback)]
    [InlineData("on", CpuKernelCheck.Off, CpuKernelCheck.On)]
    [InlineData(" OFF ", CpuKernelCheck.On, CpuKernelCheck.Off)]
    [InlineData("fallback", CpuKernelCheck.On, CpuKernelCheck.Fallback)]
    public void TheEnvironmentVariableOverridesTheProgramsChoice(string? variable, CpuKernelCheck configured, CpuKernelCheck expected) =>
        Assert.Equal(expected, CpuKernelGuard.EffectiveMode(configured, variable));

    [Fact]
    public void AnUnknownEnvironmentValueIsAnErrorNamingTheVariable()
    {
        var e = Assert.Throws<InvalidOptionsException>(() => CpuKernelGuard.EffectiveMode(CpuKernelCheck.On, "sometimes"));
        Assert.Contains(CpuKernels.EnvironmentVariable, e.Message, StringComparison.Ordinal);
        Assert.Contains("sometimes", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WithOneDnnOffEveryKernelIsRight()
    {
        Assert.True(LibTorchContext.OneDnn.IsAvailable, "libtorch_cpu exports at::Context::setUserEnabledMkldnn");
        Assert.True(LibTorchContext.Nnpack.IsAvailable, "libtorch_cpu exports at::Context::setUserEnabledNNPACK");
        bool oneDnn = LibTorchContext.OneDnn.Enabled;
        bool nnpack = LibTorchContext.Nnpack.Enabled;
        try
        {
            Assert.True(LibTorchSwitches.Instance.TryDisableOneDnn());
            Assert.False(LibTorchContext.OneDnn.Enabled);
            Assert.False(LibTorchContext.Nnpack.Enabled);
            var defects = new KernelCheck().Run();
            Assert.True(defects.Count == 0, string.Join("; ", defects));
        }
        finally
        {
            LibTorchContext.OneDnn.TrySet(oneDnn);
            LibTorchContext.Nnpack.TrySet(nnpack);
        }

        Assert.Equal(oneDnn, LibTorchContext.OneDnn.Enabled);
    }

    [Fact]
    public void WithEveryConvolutionAsAMatrixProductEveryKernelIsRight()
    {
        bool before = CpuConvolution.MatrixProductEverywhere;
        try
        {
            CpuConvolution.MatrixProductEverywhere = true;
            var defects = new KernelCheck().Run();
            Assert.True(defects.Count == 0, string.Join("; ", defects));
        }
        finally
        {
            CpuConvolution.MatrixProductEverywhere = before;
        }
    }

    [Fact]
    public void TheCpuIsDescribedByModelFamilyAndVectorExtensions()
    {
        var lines = new[]
        {
            "processor\t: 0", "vendor_id\t: AuthenticAMD", "cpu family\t: 26", "model\t\t: 2", "model name\t: AMD EPYC",
            "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16",
        };
        Assert.Equal("AMD EPYC (family 26, model 2; avx2 avx512f avx512_bf16)", CpuDescription.FromCpuInfo(lines));
        Assert.Null(CpuDescription.FromCpuInfo(new[] { "processor\t: 0" }));
    }

    private sealed class FakeSwitches(bool canDisableOneDnn) : IKernelSwitches
    {
        public bool OneDnnDisabled { get; private set; }

        public bool MatrixProduct { get; private set; }

        public bool TryDisableOneDnn()
        {
            OneDnnDisabled = canDisableOneDnn;
            return canDisableOneDnn;
        }

        public void UseMatrixProductConvolutions() => MatrixProduct = true;
    }

    private sealed class ScriptedCheck(Func<IReadOnlyList<KernelDefect>> result)
    {
        public int Calls { get; private set; }

        public IReadOnlyList<KernelDefect> Run()
        {
            Calls++;
            return result();
        }
    }
}
