using System.Diagnostics;
using SharpFuzz;
using StableLora.Fuzz;

// dotnet StableLora.Fuzz.dll afl <target>                      the AFL++ harness (run-afl.sh starts it under afl-fuzz)
// dotnet StableLora.Fuzz.dll seeds <folder>                    writes the seed inputs of every target to <folder>/<target>/
// dotnet StableLora.Fuzz.dll replay <target> <file|folder>...  runs inputs once each (triage of AFL++ crashes and hangs)
// dotnet StableLora.Fuzz.dll mutate <target> <seconds> [seed]  seeded mutation fuzzing without AFL++ (run from the repository root);
//                                                             findings go to ./findings/<target>/
//                                                             (inputs that ImageSharp fails on in undocumented ways too, as handled-*)
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: StableLora.Fuzz (afl <target> | seeds <folder> | replay <target> <path>... | mutate <target> <seconds> [seed])");
    Console.Error.WriteLine($"targets: {string.Join(", ", FuzzTargets.Names)}");
    return 2;
}

string scratch = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"stablelora-fuzz-{Environment.ProcessId}");
try
{
    return args[0] switch
    {
        "afl" => Afl(args[1]),
        "seeds" => Seeds(args[1]),
        "replay" => Replay(args[1], args.Skip(2)),
        "mutate" => Mutate(args[1], int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture),
            args.Length > 3 ? int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 1),
        _ => throw new ArgumentException($"unknown command '{args[0]}'"),
    };
}
finally
{
    foreach (var file in Directory.GetFiles(Path.GetDirectoryName(scratch)!, Path.GetFileName(scratch) + ".*"))
        File.Delete(file);
}

int Afl(string target)
{
    Fuzzer.OutOfProcess.Run(stream =>
    {
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        FuzzTargets.Run(target, memory.ToArray(), scratch);
    });
    return 0;
}

int Seeds(string folder)
{
    foreach (var target in FuzzTargets.Names)
    {
        string directory = Path.Combine(folder, target);
        Directory.CreateDirectory(directory);
        foreach (var (name, data) in FuzzSeeds.For(target))
            File.WriteAllBytes(Path.Combine(directory, name), data);
        Console.WriteLine($"{target}: {Directory.GetFiles(directory).Length} seeds in {directory}");
    }

    return 0;
}

int Replay(string target, IEnumerable<string> paths)
{
    int findings = 0;
    var files = paths.SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p).Order(StringComparer.Ordinal).ToArray() : new[] { p });
    foreach (var file in files)
    {
        try
        {
            var clock = Stopwatch.StartNew();
            var outcome = FuzzTargets.Run(target, File.ReadAllBytes(file), scratch);
            Console.WriteLine($"{file}: {outcome} in {clock.Elapsed.TotalMilliseconds:F0} ms");
        }
        catch (Exception e)
        {
            findings++;
            Console.WriteLine($"{file}: FINDING {e}");
        }
    }

    return findings == 0 ? 0 : 1;
}

int Mutate(string target, int seconds, int seed)
{
    var seeds = FuzzSeeds.For(target, Path.Combine("tests", "StableLora.Tests", "Fixtures", "images")).Select(s => s.Data).ToList();
    var mutator = new Mutator(seed);
    var random = new Random(seed);
    var outcomes = new SortedDictionary<string, int>(StringComparer.Ordinal);
    string findingsFolder = Path.Combine("findings", target);
    int executions = 0, findings = 0;
    var clock = Stopwatch.StartNew();
    while (clock.Elapsed.TotalSeconds < seconds)
    {
        byte[] input = mutator.Mutate(seeds[random.Next(seeds.Count)], seeds);
        executions++;
        string outcome;
        try
        {
            var result = FuzzTargets.Run(target, input, scratch);
            outcome = result.ToString();
            if (FuzzTargets.IsDecoderDefect(result.Refusal) && outcomes.GetValueOrDefault(outcome) < 3)
            {
                // Handled (reported as a bad image), but a defect of the decoder: kept for the report and as regressions.
                Directory.CreateDirectory(findingsFolder);
                File.WriteAllBytes(Path.Combine(findingsFolder, $"handled-{result.Refusal}-seed{seed}-{executions}"), input);
            }
        }
        catch (Exception e)
        {
            findings++;
            outcome = "FINDING " + e.GetType().Name;
            Directory.CreateDirectory(findingsFolder);
            string file = Path.Combine(findingsFolder, $"seed{seed}-{executions}");
            File.WriteAllBytes(file, input);
            Console.WriteLine($"{file}: {e}");
        }

        outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
    }

    Console.WriteLine($"{target}: {executions} executions in {clock.Elapsed.TotalSeconds:F0} s (seed {seed}), {findings} findings");
    foreach (var (outcome, count) in outcomes)
        Console.WriteLine($"  {count,8}  {outcome}");
    return findings == 0 ? 0 : 1;
}
