using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;

namespace StableLora.Tests.Schedulers;

/// <summary>
/// Karras sigmas (no fixture): checked against values derived here independently, in float64, from the definition:
/// sigma_i = (sigma_max^(1/7) + i/(N-1) * (sigma_min^(1/7) - sigma_max^(1/7)))^7 between the extreme training sigmas,
/// and each sigma mapped back to a training timestep by linear interpolation in log sigma over the training table.
/// </summary>
public sealed class KarrasSigmaTests
{
    private const double Rho = 7;

    [Theory]
    [InlineData(10)]
    [InlineData(25)]
    public void EulerKarrasSigmasAndTimestepsFollowTheDefinition(int steps)
    {
        double[] trainingSigmas = TrainingSigmas();
        using var euler = new EulerDiscreteScheduler(SchedulerFixture.Sd15Config() with { UseKarrasSigmas = true });
        euler.SetTimesteps(steps);

        double[] expected = KarrasRamp(trainingSigmas[^1], trainingSigmas[0], steps);
        Assert.Equal(steps + 1, euler.SigmaValues.Length);
        Assert.Equal(0f, euler.SigmaValues[^1]);
        for (int i = 0; i < steps; i++)
            Assert.True(Math.Abs(euler.SigmaValues[i] - expected[i]) <= 2e-7 * expected[i], $"sigma[{i}]: {euler.SigmaValues[i]} vs {expected[i]}");
        Assert.Equal(euler.SigmaValues[0], euler.InitNoiseSigma);

        // diffusers keeps these timesteps as float64 and computes the interpolation weight in float32.
        Assert.Equal(torch.float64, euler.Timesteps.dtype);
        double[] timesteps = euler.Timesteps.data<double>().ToArray();
        for (int i = 0; i < steps; i++)
            Assert.True(Math.Abs(timesteps[i] - TimestepOf(expected[i], trainingSigmas)) < 1e-3, $"timestep[{i}]: {timesteps[i]} vs {TimestepOf(expected[i], trainingSigmas)}");
        Assert.Equal(999, timesteps[0], 1e-3);
        Assert.Equal(0, timesteps[^1], 1e-3);
    }

    [Theory]
    [InlineData(12)]
    [InlineData(20)]
    public void DpmKarrasTimestepsAreTheRoundedKarrasTimestepsWithoutDuplicates(int steps)
    {
        double[] trainingSigmas = TrainingSigmas();
        using var dpm = new DpmSolverMultistepScheduler(SchedulerFixture.Sd15Config() with { UseKarrasSigmas = true });
        dpm.SetTimesteps(steps);

        double[] descending = KarrasRamp(trainingSigmas[^1], trainingSigmas[0], steps);
        var expected = new List<long>();
        foreach (double sigma in descending)
        {
            long t = (long)Math.Round(TimestepOf(sigma, trainingSigmas), MidpointRounding.ToEven);
            if (!expected.Contains(t))
                expected.Add(t);
        }
        Assert.Equal(expected, dpm.Timesteps.data<long>().ToArray());
        Assert.Equal(expected.Count, dpm.StepCount);

        // diffusers builds them from the smallest sigma up, then flips the timesteps; its `sigmas` stay ascending.
        Assert.Equal(steps, dpm.Sigmas.Count);
        for (int i = 0; i < steps; i++)
            Assert.Equal(descending[steps - 1 - i], dpm.Sigmas[i], 2e-7 * descending[steps - 1 - i]);
    }

    [Fact]
    public void EulerStepsFollowTheKarrasSigmas()
    {
        using var scope = torch.NewDisposeScope();
        using var euler = new EulerDiscreteScheduler(SchedulerFixture.Sd15Config() with { UseKarrasSigmas = true });
        euler.SetTimesteps(15);
        var sample = torch.randn([1, 4, 8, 8], generator: new torch.Generator(9)) * euler.InitNoiseSigma;
        var reference = sample.to(torch.float64);
        for (int i = 0; i < euler.StepCount; i++)
        {
            var input = euler.ScaleModelInput(sample, i);
            var modelOutput = SchedulerFixture.FakeModel(input, euler.TimestepAt(i));
            sample = euler.Step(modelOutput, i, sample).PrevSample;

            // Euler's method for dx/dsigma = (x - x0) / sigma with x0 = x - sigma * eps, in float64.
            double sigma = euler.SigmaValues[i], next = euler.SigmaValues[i + 1];
            var eps = SchedulerFixture.FakeModel(reference / Math.Sqrt(sigma * sigma + 1), euler.TimestepAt(i));
            reference = reference + (reference - (reference - sigma * eps)) / sigma * (next - sigma);
            TensorAssert.Close(reference, sample, new Tolerance(1e-4, 1e-4), $"step {i}");
        }
    }

    [Fact]
    public void DpmKarrasScheduleRunsToTheEnd()
    {
        using var scope = torch.NewDisposeScope();
        using var dpm = new DpmSolverMultistepScheduler(SchedulerFixture.Sd15Config() with { UseKarrasSigmas = true });
        dpm.SetTimesteps(15);
        var sample = torch.randn([1, 4, 8, 8], generator: new torch.Generator(9));
        for (int i = 0; i < dpm.StepCount; i++)
            sample = dpm.Step(SchedulerFixture.FakeModel(sample, dpm.TimestepAt(i)), i, sample).PrevSample;
        Assert.False(sample.isnan().any().item<bool>());
        Assert.True(sample.abs().max().item<float>() < 100);
    }

    private static double[] TrainingSigmas()
    {
        using var ddpm = new DdpmScheduler(SchedulerFixture.Sd15Config());
        return ddpm.AlphasCumprod.data<float>().ToArray().Select(a => Math.Sqrt((1.0 - a) / a)).ToArray();
    }

    private static double[] KarrasRamp(double sigmaMax, double sigmaMin, int count)
    {
        double maxInvRho = Math.Pow(sigmaMax, 1 / Rho), minInvRho = Math.Pow(sigmaMin, 1 / Rho);
        return Enumerable.Range(0, count).Select(i => Math.Pow(maxInvRho + i / (count - 1.0) * (minInvRho - maxInvRho), Rho)).ToArray();
    }

    private static double TimestepOf(double sigma, double[] trainingSigmas)
    {
        double logSigma = Math.Log(sigma);
        int low = Math.Clamp(Array.FindLastIndex(trainingSigmas, s => Math.Log(s) <= logSigma), 0, trainingSigmas.Length - 2);
        double w = (Math.Log(trainingSigmas[low]) - logSigma) / (Math.Log(trainingSigmas[low]) - Math.Log(trainingSigmas[low + 1]));
        return low + Math.Clamp(w, 0, 1);
    }

    /// <summary>
    /// Bit patterns (input, np.log output) from NumPy 1.24.2's float32 log on an AVX2/AVX512F CPU: SD training sigmas whose
    /// NumPy log is 1 or 2 ulp from the correctly rounded one, the sqrt(1/2) boundary of its range reduction, a
    /// denormal and FLT_MIN.
    /// </summary>
    [Theory]
    [InlineData(1061831033, -1099871031)] // t=285: sigma 0.79006153, +2 ulp from the correctly rounded log
    [InlineData(1065525445, 1017543985)] // t=360: sigma 1.0205313, -2 ulp
    [InlineData(1034607053, -1071712500)] // t=7: sigma 0.083423235, +1 ulp
    [InlineData(1044216970, -1076366166)] // t=35: sigma 0.18504539, -1 ulp
    [InlineData(0x3F3504F3, -1095667176)] // 0.70710677
    [InlineData(0x3F3504F4, -1095667179)] // 0.7071068
    [InlineData(0x3F800000, 0)] // 1
    [InlineData(0x000AE398, -1028417019)] // 1e-39 (denormal)
    [InlineData(0x00800000, -1028740016)] // FLT_MIN
    public void Float32LogIsNumpysNotTheCorrectlyRoundedOne(int inputBits, int expectedBits)
    {
        float log = NumpyMath.LogFloat32(BitConverter.Int32BitsToSingle(inputBits));
        Assert.Equal(expectedBits, BitConverter.SingleToInt32Bits(log));
    }
}
