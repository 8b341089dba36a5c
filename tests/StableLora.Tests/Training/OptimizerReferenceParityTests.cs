using System.Globalization;
using System.Text.Json;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>
/// Prodigy, Adafactor, Lion and SGD (Nesterov) against their reference implementations run by
/// tools/generate_optimizer_fixtures.py (torch 1.13): two parameter groups, ten steps of stored gradients at a changing
/// learning rate per group (in the *_missing_grads cases some parameters have no gradient in some steps); parameters,
/// optimizer state and scalar state after steps 1, 2 and 10.
/// </summary>
/// <remarks>
/// Tolerances: after 1 and 2 steps every tensor within 4 float32 ulp of its largest magnitude (max |ours - theirs| ≤
/// 4 x 2^-23 x max |theirs|), the float64 scalars (Prodigy's d, d_max, d_numerator; Adafactor's learning rate) within
/// 1e-6 relative (they come from float32 reductions); after 10 steps 1e-5 relative to each tensor's largest magnitude.
/// </remarks>
public sealed class OptimizerReferenceParityTests
{
    private const double Ulp32 = 1.0 / (1 << 23);
    private static readonly string Folder = Path.Combine(FixturePaths.Root, "optimizers");
    private static readonly JsonElement Document = JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "optimizers.json"))).RootElement;

    public static TheoryData<string> Cases()
    {
        var data = new TheoryData<string>();
        foreach (var c in Document.GetProperty("cases").EnumerateArray())
            data.Add(c.GetProperty("name").GetString()!);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesTheReferenceAfterOneTwoAndTenSteps(string caseName)
    {
        using var scope = NewDisposeScope();
        var c = Document.GetProperty("cases").EnumerateArray().Single(e => e.GetProperty("name").GetString() == caseName);
        using var reader = SafetensorsReader.Open(Path.Combine(Folder, "optimizers.safetensors"));
        Assert.Empty(OptimizerChoice.Problems(TypeOf(c), Arguments(c)));
        var (parameters, optimizer) = Create(c, reader);
        using (optimizer)
        {
            int steps = Document.GetProperty("steps").GetInt32();
            for (int step = 1; step <= steps; step++)
            {
                Step(c, reader, parameters, optimizer, step);
                if (step is 1 or 2 or 10)
                    Compare(caseName, step, c, reader, parameters.Select(p => (p.Name, p.Parameter)).ToList(), optimizer);
            }
        }
    }

    /// <summary>
    /// Five steps, the state through StateTensors/LoadState into a fresh optimizer (as a checkpoint round trip does), five
    /// more: the parameters equal an uninterrupted run's bit for bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void StateRoundTripsSoThatAResumedRunIsBitIdentical(string caseName)
    {
        using var scope = NewDisposeScope();
        var c = Document.GetProperty("cases").EnumerateArray().Single(e => e.GetProperty("name").GetString() == caseName);
        using var reader = SafetensorsReader.Open(Path.Combine(Folder, "optimizers.safetensors"));
        var (straightParameters, straight) = Create(c, reader);
        using (straight)
        {
            for (int step = 1; step <= 10; step++)
                Step(c, reader, straightParameters, straight, step);
        }

        var (parameters, first) = Create(c, reader);
        Dictionary<string, Tensor> saved;
        long steps;
        using (first)
        {
            for (int step = 1; step <= 5; step++)
                Step(c, reader, parameters, first, step);
            saved = first.StateTensors().ToDictionary(t => t.Key, t => t.Value.clone());
            steps = first.StepCount;
        }

        var (resumedParameters, resumed) = Create(c, reader);
        using (resumed)
        {
            using (no_grad())
            {
                foreach (var ((_, _, target), (_, _, source)) in resumedParameters.Zip(parameters))
                    target.copy_(source);
            }

            resumed.LoadState(steps, name => saved.TryGetValue(name, out var t) ? t : null);
            for (int step = 6; step <= 10; step++)
                Step(c, reader, resumedParameters, resumed, step);
            foreach (var ((name, _, expected), (_, _, actual)) in straightParameters.Zip(resumedParameters))
                Assert.True(expected.detach().eq(actual.detach()).all().item<bool>(), $"{caseName}: {name} differs after resuming");
        }
    }

    private static (List<(string Name, int Group, Parameter Parameter)>, ILoraOptimizer) Create(JsonElement c, SafetensorsReader reader)
    {
        var parameters = Document.GetProperty("parameters").EnumerateArray()
            .Select(p => (Name: p.GetProperty("name").GetString()!, Group: p.GetProperty("group").GetInt32()))
            .Select(p => (p.Name, p.Group, Parameter: new Parameter(reader.Read($"init.{p.Name}").clone(), requires_grad: true)))
            .ToList();
        var groups = Enumerable.Range(0, 2)
            .Select(g => (IReadOnlyList<(string, Parameter)>)parameters.Where(p => p.Group == g).Select(p => (p.Name, p.Parameter)).ToList())
            .ToList();
        return (parameters, OptimizerChoice.Create(TypeOf(c), Arguments(c), groups));
    }

    private static Dictionary<string, string> Arguments(JsonElement c) => c.GetProperty("args").EnumerateObject().ToDictionary(a => a.Name, a => ArgumentText(a.Value));

    private static void Step(JsonElement c, SafetensorsReader reader, List<(string Name, int Group, Parameter Parameter)> parameters, ILoraOptimizer optimizer, int step)
    {
        using var scope = NewDisposeScope();
        foreach (var (name, _, parameter) in parameters)
        {
            // A parameter without a gradient this step is skipped, as the references' `if p.grad is None` does.
            bool missing = c.TryGetProperty("missing", out var m) && m.TryGetProperty(name, out var missingSteps) && missingSteps.EnumerateArray().Any(x => x.GetInt32() == step);
            parameter.grad = missing ? null : reader.Read($"grad{step}.{name}").clone();
        }

        optimizer.Step(c.GetProperty("lrs").GetProperty(step.ToString(CultureInfo.InvariantCulture)).EnumerateArray().Select(x => x.GetDouble()).ToList());
        optimizer.ZeroGrad();
    }

    private static OptimizerType TypeOf(JsonElement c) => c.GetProperty("optimizer").GetString() switch
    {
        "prodigy" => OptimizerType.Prodigy,
        "adafactor" => OptimizerType.Adafactor,
        "lion" => OptimizerType.Lion,
        _ => OptimizerType.Sgd,
    };

    private static void Compare(string caseName, int step, JsonElement c, SafetensorsReader reader, List<(string Name, Parameter Parameter)> parameters, ILoraOptimizer optimizer)
    {
        using var scope = NewDisposeScope();
        double tensorTolerance = step <= 2 ? 4 * Ulp32 : 1e-5;
        double scalarTolerance = step <= 2 ? 1e-6 : 1e-5;
        string prefix = $"{caseName}.step{step}";
        foreach (var (name, parameter) in parameters)
            CloseToScale(reader.Read($"{prefix}.param.{name}"), parameter.detach(), tensorTolerance, $"{prefix} {name}");

        var ours = optimizer.StateTensors().ToDictionary(t => t.Key, t => t.Value);
        var statePrefix = $"{prefix}.state.";
        var expectedState = reader.Tensors.Select(t => t.Name).Where(n => n.StartsWith(statePrefix, StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(expectedState);
        foreach (string key in expectedState)
        {
            string ourName = key[statePrefix.Length..];
            Assert.True(ours.ContainsKey(ourName), $"{prefix}: no state tensor {ourName}");
            CloseToScale(reader.Read(key), ours[ourName].reshape(-1), tensorTolerance, $"{prefix} state {ourName}");
        }

        var scalars = c.GetProperty("scalars").GetProperty(step.ToString(CultureInfo.InvariantCulture));
        var effective = scalars.GetProperty("effective_lrs").EnumerateArray().Select(x => x.GetDouble()).ToList();
        for (int g = 0; g < effective.Count; g++)
            AssertRelative(effective[g], optimizer.EffectiveLearningRates[g], scalarTolerance, $"{prefix} effective lr of group {g}");
        if (optimizer is ProdigyOptimizer prodigy)
        {
            AssertRelative(scalars.GetProperty("d").GetDouble(), prodigy.D, scalarTolerance, $"{prefix} d");
            AssertRelative(scalars.GetProperty("d_max").GetDouble(), prodigy.DMax, scalarTolerance, $"{prefix} d_max");
            AssertRelative(scalars.GetProperty("d_numerator").GetDouble(), prodigy.DNumerator, scalarTolerance, $"{prefix} d_numerator");
            Assert.Equal(scalars.GetProperty("k").GetInt64(), prodigy.K);
        }
    }

    /// <summary>max |actual - expected| ≤ relative x max |expected| over the flattened tensors (a zero tensor must match exactly).</summary>
    private static void CloseToScale(Tensor expected, Tensor actual, double relative, string label)
    {
        Assert.Equal(expected.numel(), actual.numel());
        TensorAssert.CloseToScale(expected.reshape(-1), actual.reshape(-1), relative, label);
    }

    private static void AssertRelative(double expected, double actual, double relative, string label) =>
        Assert.True(Math.Abs(actual - expected) <= relative * Math.Abs(expected), $"{label}: {actual:R} vs the reference's {expected:R}");

    /// <summary>A JSON argument as the command line writes it (True/False, 0.9,0.99, numbers).</summary>
    private static string ArgumentText(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.True => "True",
        JsonValueKind.False => "False",
        JsonValueKind.Array => string.Join(",", value.EnumerateArray().Select(ArgumentText)),
        _ => value.GetDouble().ToString("R", CultureInfo.InvariantCulture),
    };
}
