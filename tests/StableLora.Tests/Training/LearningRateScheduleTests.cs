using System.Text.Json;
using StableLora.Tests.Infrastructure;
using StableLora.Training;

namespace StableLora.Tests.Training;

/// <summary>
/// Every learning-rate schedule against diffusers 0.21.4's <c>get_scheduler</c> (Fixtures/schedules/schedules.json, made by
/// tools/generate_schedule_fixtures.py): the multiplier and both parameter groups' learning rates after every scheduler step.
/// </summary>
public sealed class LearningRateScheduleTests
{
    private static readonly Lazy<JsonDocument> Fixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(FixturePaths.Root, "schedules", "schedules.json"))));

    public static IEnumerable<object[]> Cases() =>
        Enumerable.Range(0, Fixture.Value.RootElement.GetProperty("cases").GetArrayLength()).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Cases))]
    public void MultipliersAndGroupLearningRatesEqualDiffusersAtEveryStep(int index)
    {
        var c = Fixture.Value.RootElement.GetProperty("cases")[index];
        var options = OptionsOf(c);
        var schedule = LearningRateScheduleSettings.For(options);
        Assert.Equal(c.GetProperty("warmup_steps").GetInt64(), schedule.Kind == LearningRateSchedule.Constant ? c.GetProperty("warmup_steps").GetInt64() : schedule.WarmupSteps);

        var multipliers = c.GetProperty("multipliers").EnumerateArray().Select(m => m.GetDouble()).ToArray();
        var peaks = c.GetProperty("base_lrs").EnumerateArray().Select(m => m.GetDouble()).ToArray();
        var lrs = c.GetProperty("lrs").EnumerateArray().Select(g => g.EnumerateArray().Select(m => m.GetDouble()).ToArray()).ToArray();
        string label = $"{c.GetProperty("schedule").GetString()} steps {options.MaxSteps} warmup {schedule.WarmupSteps} cycles {schedule.Cycles} power {schedule.Power} end {schedule.EndLearningRate}";
        for (int k = 0; k < multipliers.Length; k++)
        {
            double multiplier = schedule.Multiplier(k);
            Assert.True(Close(multipliers[k], multiplier), $"{label}: multiplier after {k} steps {multiplier:R}, diffusers {multipliers[k]:R}");
            for (int g = 0; g < peaks.Length; g++)
            {
                double lr = peaks[g] * multiplier;
                Assert.True(Close(lrs[g][k], lr), $"{label}: group {g} lr after {k} steps {lr:R}, diffusers {lrs[g][k]:R}");
            }
        }
    }

    [Fact]
    public void TheFixtureCoversEverySchedule()
    {
        var names = Fixture.Value.RootElement.GetProperty("cases").EnumerateArray().Select(c => c.GetProperty("schedule").GetString()!).ToHashSet();
        Assert.Equal(Enum.GetValues<LearningRateSchedule>().Select(LearningRateScheduleSettings.Name).ToHashSet(), names);
        Assert.Equal("0.21.4", Fixture.Value.RootElement.GetProperty("versions").GetProperty("diffusers").GetString());
    }

    [Fact]
    public void TheDefaultScheduleIsTheSeedsCosineWithWarmupToTheBit()
    {
        var options = new LoraTrainingOptions();
        var schedule = LearningRateScheduleSettings.For(options);
        Assert.Equal(LearningRateSchedule.Cosine, schedule.Kind);
        for (long k = 0; k <= options.MaxSteps; k++)
            Assert.Equal(CosineWithWarmup.Multiplier(k, 100, options.MaxSteps), schedule.Multiplier(k));
    }

    [Fact]
    public void TheDefaultWarmupShortensToAShortRunButAnExplicitOneMustFit()
    {
        Assert.Equal(100, new LoraTrainingOptions { MaxSteps = 1000 }.EffectiveWarmupSteps);
        Assert.Equal(50, LearningRateScheduleSettings.EffectiveWarmupSteps(new LoraTrainingOptions { MaxSteps = 50 }));
        Assert.Empty(new LoraTrainingOptions { MaxSteps = 50, DataDirectory = "." }.Validate(hasDatasetObject: true));
        var error = Assert.Single(new LoraTrainingOptions { MaxSteps = 50, WarmupSteps = 100 }.Validate(hasDatasetObject: true));
        Assert.Equal(nameof(LoraTrainingOptions.WarmupSteps), error.Option);
    }

    [Fact]
    public void AWarmupRatioBecomesIntOfRatioTimesStepsAsKohyaDoes()
    {
        Assert.Equal(3, LearningRateScheduleSettings.EffectiveWarmupSteps(new LoraTrainingOptions { MaxSteps = 37, WarmupRatio = 0.1 }));
        // Python: int(0.29 * 100) = int(28.999999999999996) = 28.
        Assert.Equal(28, LearningRateScheduleSettings.EffectiveWarmupSteps(new LoraTrainingOptions { MaxSteps = 100, WarmupRatio = 0.29 }));
        Assert.Equal(0, LearningRateScheduleSettings.EffectiveWarmupSteps(new LoraTrainingOptions { LearningRateSchedule = LearningRateSchedule.Constant }));
        Assert.Equal(100, LearningRateScheduleSettings.EffectiveWarmupSteps(new LoraTrainingOptions()));
    }

    [Fact]
    public void InvalidScheduleCombinationsAreReportedNamingOptionAndValue()
    {
        static Dictionary<string, OptionError> Errors(LoraTrainingOptions options) =>
            options.Validate(hasDatasetObject: true).GroupBy(e => e.Option).ToDictionary(g => g.Key, g => g.First());

        var errors = Errors(new LoraTrainingOptions { LearningRateSchedule = LearningRateSchedule.Cosine, LearningRateCycles = 3, LearningRatePower = 2, LearningRateEnd = 1e-6 });
        Assert.Equal("3", errors["LearningRateCycles"].Value);
        Assert.Contains("CosineWithRestarts", errors["LearningRateCycles"].Message);
        Assert.Equal("2", errors["LearningRatePower"].Value);
        Assert.Contains("Polynomial", errors["LearningRatePower"].Message);
        Assert.Contains("Polynomial", errors["LearningRateEnd"].Message);

        errors = Errors(new LoraTrainingOptions { LearningRateSchedule = LearningRateSchedule.Constant, WarmupRatio = 0.1 });
        Assert.Contains("ConstantWithWarmup", errors["WarmupRatio"].Message);
        errors = Errors(new LoraTrainingOptions { WarmupRatio = 1.5 });
        Assert.Equal("1.5", errors["WarmupRatio"].Value);
        errors = Errors(new LoraTrainingOptions { LearningRateSchedule = LearningRateSchedule.Polynomial, LearningRate = 1e-4, LearningRateEnd = 1e-4 });
        Assert.Contains("below LearningRate", errors["LearningRateEnd"].Message);
        errors = Errors(new LoraTrainingOptions { LearningRateSchedule = LearningRateSchedule.CosineWithRestarts, LearningRateCycles = 0 });
        Assert.Contains("at least 1", errors["LearningRateCycles"].Message);

        // A ratio replaces WarmupSteps, whose default (100) may then exceed a short run.
        Assert.DoesNotContain(Errors(new LoraTrainingOptions { MaxSteps = 10, WarmupRatio = 0.1 }).Keys, k => k.StartsWith("Warmup", StringComparison.Ordinal) || k.StartsWith("LearningRate", StringComparison.Ordinal));
        Assert.DoesNotContain(Errors(new LoraTrainingOptions { LearningRateSchedule = LearningRateSchedule.Polynomial, LearningRatePower = 2, LearningRateEnd = 1e-6 }).Keys,
            k => k.StartsWith("LearningRate", StringComparison.Ordinal));
    }

    private static LoraTrainingOptions OptionsOf(JsonElement c)
    {
        var kind = Enum.GetValues<LearningRateSchedule>().Single(k => LearningRateScheduleSettings.Name(k) == c.GetProperty("schedule").GetString());
        var options = new LoraTrainingOptions
        {
            LearningRateSchedule = kind,
            MaxSteps = c.GetProperty("training_steps").GetInt32(),
            LearningRate = c.GetProperty("base_lrs")[0].GetDouble(),
        };
        options = c.GetProperty("warmup_ratio").ValueKind == JsonValueKind.Number
            ? options with { WarmupRatio = c.GetProperty("warmup_ratio").GetDouble() }
            : options with { WarmupSteps = c.GetProperty("warmup_steps").GetInt32() };
        if (c.GetProperty("num_cycles").ValueKind == JsonValueKind.Number)
            options = options with { LearningRateCycles = c.GetProperty("num_cycles").GetInt32() };
        if (c.GetProperty("power").ValueKind == JsonValueKind.Number)
            options = options with { LearningRatePower = c.GetProperty("power").GetDouble() };
        if (c.GetProperty("lr_end").ValueKind == JsonValueKind.Number)
            options = options with { LearningRateEnd = c.GetProperty("lr_end").GetDouble() };
        return options;
    }

    /// <summary>
    /// Bit-identical: the lambdas are the same IEEE double operations as Python's floats (and the same libm cos and pow),
    /// and LambdaLR's base_lr * lambda is one multiplication.
    /// </summary>
    private static bool Close(double expected, double actual) => expected.Equals(actual);
}
