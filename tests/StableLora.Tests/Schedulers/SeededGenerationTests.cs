using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;

namespace StableLora.Tests.Schedulers;

/// <summary>
/// The random draws of the fixture's seeded cases (<c>torch.Generator('cpu').manual_seed(seed)</c> then
/// <c>torch.randn(shape, generator=g)</c>), and the scheduler half of those pipeline runs: given the stored guided noise
/// predictions, each scheduler must reproduce the stored latents of every step, drawing its own noise (Euler ancestral)
/// from the same generator right after the initial latents.
/// </summary>
public sealed class SeededGenerationTests(ITestOutputHelper output)
{
    private const string File = "seeded.safetensors";

    [Theory]
    [InlineData("seeded_pndm", 1234L, new long[] { 1, 4, 8, 8 })]
    [InlineData("seeded_dpmpp_h16_w24", 7L, new long[] { 1, 4, 8, 12 })]
    [InlineData("seeded_euler_a_x2", 42L, new long[] { 2, 4, 8, 8 })]
    public void RandnWithASeededCpuGeneratorReproducesTheInitialLatents(string caseId, long seed, long[] shape)
    {
        Assert.Equal(seed, FixtureCases.Case(caseId).GetProperty("seed").GetInt64());
        using var scope = torch.NewDisposeScope();
        using var reader = SchedulerFixture.Open(File);
        using var generator = new torch.Generator().manual_seed(seed);
        var latents = torch.randn(shape, torch.float32, generator: generator);
        TensorAssert.Identical(reader.Read($"{caseId}.initial_latents"), latents, $"{caseId}.initial_latents");
    }

    [Fact]
    public void EulerAncestralStepNoiseContinuesTheGeneratorStream()
    {
        using var scope = torch.NewDisposeScope();
        using var reader = SchedulerFixture.Open(File);
        using var generator = new torch.Generator().manual_seed(42);
        torch.randn([2, 4, 8, 8], torch.float32, generator: generator);
        var stepNoise = reader.Read("seeded_euler_a_x2.step_noise");
        for (int i = 0; i < stepNoise.shape[0]; i++)
            TensorAssert.Identical(stepNoise[i], torch.randn([2, 4, 8, 8], torch.float32, generator: generator), $"step_noise[{i}]");

        using var schedulers = SchedulerFixture.Open("schedulers.safetensors");
        using var loopGenerator = new torch.Generator().manual_seed(404);
        for (int i = 0; i < 20; i++)
            TensorAssert.Identical(schedulers.Read($"EulerAncestralDiscrete_step_noise_{i}"), torch.randn([1, 4, 8, 8], torch.float32, generator: loopGenerator), $"EulerAncestralDiscrete_step_noise_{i}");
    }

    /// <summary>
    /// libtorch's CPU generator seeds mt19937 with the low 32 bits of the 64-bit seed (as PyTorch does), so seeds that
    /// differ by a multiple of 2^32 give the same numbers; TorchSharp takes the seed as <c>long</c> in
    /// <c>manual_seed</c> and as <c>ulong</c> in the constructor, and both keep all 64 bits as the initial seed.
    /// </summary>
    [Fact]
    public void SeedsUseTheLow32BitsOfTheirTwosComplement64BitValue()
    {
        using var scope = torch.NewDisposeScope();
        torch.Tensor Draw(torch.Generator generator)
        {
            using (generator)
                return torch.randn([16], torch.float32, generator: generator);
        }

        var reference = Draw(new torch.Generator().manual_seed(1234));
        TensorAssert.Identical(reference, Draw(new torch.Generator().manual_seed(1234 + (1L << 32))), "seed + 2^32");
        TensorAssert.Identical(reference, Draw(new torch.Generator(1234UL + (1UL << 63))), "ulong seed 2^63 + 1234");
        Assert.False(TensorAssert.BitEqual(reference, Draw(new torch.Generator().manual_seed(1235))), "a different low word must change the stream");

        var above31 = Draw(new torch.Generator().manual_seed(3_000_000_000));
        TensorAssert.Identical(above31, Draw(new torch.Generator(3_000_000_000UL)), "seed above 2^31 (long vs ulong)");
        TensorAssert.Identical(Draw(new torch.Generator().manual_seed(uint.MaxValue)), Draw(new torch.Generator().manual_seed(-1)), "-1 is 2^64 - 1");

        using var generator = new torch.Generator(5_000_000_000UL);
        Assert.Equal(5_000_000_000L, generator.initial_seed());
    }

    [Theory]
    [InlineData("seeded_pndm", SchedulerKind.Pndm)]
    [InlineData("seeded_dpmpp_h16_w24", SchedulerKind.DpmSolverMultistep)]
    [InlineData("seeded_euler_a_x2", SchedulerKind.EulerAncestralDiscrete)]
    public void SchedulerReproducesThePipelineLatentsFromTheStoredNoisePredictions(string caseId, SchedulerKind kind)
    {
        var fixtureCase = FixtureCases.Case(caseId);
        // Only the scheduler runs here, so the schedulers' tolerance applies rather than the whole pipeline's.
        var tolerance = FixtureCases.Tolerance("scheduler_PNDM");
        using var scope = torch.NewDisposeScope();
        using var reader = SchedulerFixture.Open(File);
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config());
        scheduler.SetTimesteps(fixtureCase.GetProperty("num_inference_steps").GetInt32());
        SchedulerFixture.AssertBitEqual(reader.Read($"{caseId}.timesteps"), scheduler.Timesteps, "timesteps");
        Assert.Equal(fixtureCase.GetProperty("init_noise_sigma").GetDouble(), scheduler.InitNoiseSigma);

        var initial = reader.Read($"{caseId}.initial_latents");
        using var generator = new torch.Generator().manual_seed(fixtureCase.GetProperty("seed").GetInt64());
        TensorAssert.Identical(initial, torch.randn(initial.shape, torch.float32, generator: generator), "initial_latents");

        var noisePredictions = reader.Read($"{caseId}.step_noise_pred");
        var expectedLatents = reader.Read($"{caseId}.step_latents");
        var latents = initial * scheduler.InitNoiseSigma;
        var report = new DiffReport(output, caseId);
        for (int i = 0; i < scheduler.StepCount; i++)
        {
            latents = scheduler.Step(noisePredictions[i], i, latents, generator).PrevSample;
            report.Add("step_latents", SchedulerFixture.Check(expectedLatents[i], latents, tolerance, $"step_latents[{i}]"));
        }
        report.Add("final_latents", SchedulerFixture.Check(reader.Read($"{caseId}.final_latents"), latents, tolerance, "final_latents"));
        report.Write();
    }
}
