using System.Diagnostics;
using System.Globalization;
using StableLora.Fuzz;
using StableLora.Tests.Infrastructure;
using Xunit.Abstractions;

namespace StableLora.Tests.Hardening;

/// <summary>
/// The fuzzing that runs with every test run: the corpus the AFL++ runs kept (Fixtures/fuzz-corpus/&lt;target&gt;,
/// see docs/reliability.md) is replayed, the decoder defects fuzzing found stay refused, and a short seeded mutation
/// fuzz runs over each target. The longer run is behind a switch: STABLELORA_FUZZ_LONG=1 also replays the images
/// that take long to decode (fuzz-corpus/image-slow) and mutates 100,000 inputs per target instead of 1,000;
/// STABLELORA_FUZZ_ITERATIONS and STABLELORA_FUZZ_SEED set the count and seed. A failure prints what reproduces it.
/// </summary>
public sealed class FuzzRegressionTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    public static TheoryData<string> Targets => new(FuzzTargets.Names);

    [Theory]
    [MemberData(nameof(Targets))]
    public void SeedsLoad(string target)
    {
        foreach (var (name, data) in FuzzSeeds.For(target, Path.Combine(FixturePaths.Root, "images")))
            Assert.True(FuzzTargets.Run(target, data, _temp.File("seed")).Loaded, $"{target} seed {name}");
    }

    private static bool LongRun => Environment.GetEnvironmentVariable("STABLELORA_FUZZ_LONG") == "1";

    [Theory]
    [MemberData(nameof(Targets))]
    public void KeptCorpusReplaysWithoutFindings(string target) => Replay(target, target);

    [Fact]
    public void SlowImageCorpusReplaysWithoutFindingsInTheLongRun()
    {
        if (LongRun)
            Replay(FuzzTargets.Image, "image-slow");
        else
            output.WriteLine("the slow image corpus (about 30 s) is replayed with STABLELORA_FUZZ_LONG=1");
    }

    private void Replay(string target, string corpus)
    {
        string folder = Path.Combine(FixturePaths.Root, "fuzz-corpus", corpus);
        var files = Directory.Exists(folder) ? Directory.GetFiles(folder).Order(StringComparer.Ordinal).ToArray() : Array.Empty<string>();
        int loaded = 0;
        foreach (var file in files)
        {
            FuzzOutcome outcome;
            try
            {
                outcome = FuzzTargets.Run(target, File.ReadAllBytes(file), _temp.File("corpus"));
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException($"{target} corpus file {Path.GetFileName(file)}: {e}");
            }

            loaded += outcome.Loaded ? 1 : 0;
        }

        output.WriteLine($"{corpus}: {files.Length} corpus files replayed, {loaded} loaded, {files.Length - loaded} refused");
    }

    [Fact]
    public void ImagesImageSharpFailedOnInUndocumentedWaysAreRefusedByName()
    {
        string folder = Path.Combine(FixturePaths.Root, "fuzz-corpus", "image-regressions");
        var files = Directory.GetFiles(folder);
        Assert.NotEmpty(files);
        foreach (var file in files)
        {
            // Named <format>-<exception ImageSharp threw>-<iteration>; StableLora reports each as a bad image.
            var outcome = FuzzTargets.Run(FuzzTargets.Image, File.ReadAllBytes(file), _temp.File("regression"));
            Assert.False(outcome.Loaded, file);
            Assert.StartsWith(Path.GetFileName(file).Split('-')[1], outcome.Refusal, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void SeededMutationFindsNothing(string target)
    {
        int iterations = EnvironmentInt("STABLELORA_FUZZ_ITERATIONS", LongRun ? 100_000 : 1000);
        int seed = EnvironmentInt("STABLELORA_FUZZ_SEED", 20261127);
        var seeds = FuzzSeeds.For(target, Path.Combine(FixturePaths.Root, "images")).Select(s => s.Data).ToList();
        var mutator = new Mutator(seed);
        var pick = new Random(seed);
        var clock = Stopwatch.StartNew();
        int loaded = 0;
        for (int i = 0; i < iterations; i++)
        {
            byte[] input = mutator.Mutate(seeds[pick.Next(seeds.Count)], seeds);
            try
            {
                loaded += FuzzTargets.Run(target, input, _temp.File("mutant")).Loaded ? 1 : 0;
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException(
                    $"{target}: iteration {i} of seed {seed} is a finding ({e.GetType().Name}); input (base64): {Convert.ToBase64String(input)}\n{e}");
            }
        }

        output.WriteLine($"{target}: {iterations} mutated inputs (seed {seed}) in {clock.Elapsed.TotalSeconds:F1} s, {loaded} loaded, no findings");
    }

    private static int EnvironmentInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : fallback;
}
