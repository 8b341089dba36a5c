using StableLora.Layers;
using StableLora.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Tests.Layers;

/// <summary>
/// TorchSharp passes Scalar handles to libtorch raw; a temporary Scalar can be finalized by a GC on another thread
/// mid-call (measured: about 1 in 3000 calls of <c>tensor.mul_(1.0000001)</c> fail with "Unknown scalar type" while a
/// second thread forces collections). StableLora's arithmetic keeps its Scalars alive: under the same GC pressure its
/// AdamW and tensor helpers must never fail and must give the same numbers as without it. (The hazard needs an
/// optimised build, where the JIT ends a temporary's life at its last use: the suite runs in Release in CI, and the same
/// loop written with TorchSharp's implicit Scalars fails there.)
/// </summary>
public sealed class ScalarLifetimeTests
{
    [Fact]
    public void OptimizerAndTensorMathSurviveConstantGarbageCollectionOnAnotherThread()
    {
        var quiet = Run(pressure: false);
        var stressed = Run(pressure: true);
        Assert.Equal(quiet, stressed);
    }

    private static float[] Run(bool pressure)
    {
        using var stop = new CancellationTokenSource();
        var collector = pressure
            ? new Thread(() =>
            {
                while (!stop.IsCancellationRequested)
                {
                    GC.KeepAlive(new byte[1 << 14]);
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                }
            })
            : null;
        collector?.Start();
        try
        {
            using var generator = new Generator(3);
            var parameter = new Parameter(randn(new long[] { 256 }, generator: generator));
            using var optimizer = new AdamWOptimizer(new[] { ("p", parameter) }, new AdamWSettings());
            var gradient = randn(new long[] { 256 }, generator: generator);
            for (int step = 0; step < 4000; step++)
            {
                using var scope = NewDisposeScope();
                parameter.grad = gradient.Times(0.5).Plus(parameter.DividedBy(3.0)).Minus(0.25).Clamp(-2, 2);
                optimizer.Step(1e-3);
                optimizer.ZeroGrad();
            }

            return parameter.data<float>().ToArray();
        }
        finally
        {
            stop.Cancel();
            collector?.Join();
        }
    }
}
