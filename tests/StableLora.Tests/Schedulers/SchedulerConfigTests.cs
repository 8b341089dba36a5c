using System.Text.Json.Nodes;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using TorchSharp;

namespace StableLora.Tests.Schedulers;

/// <summary>Reading scheduler_config.json, per-class defaults for absent keys, and refusal of unsupported values.</summary>
public sealed class SchedulerConfigTests
{
    private const string Sd15Json = """
        {
          "_class_name": "PNDMScheduler",
          "_diffusers_version": "0.6.0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "num_train_timesteps": 1000,
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null,
          "clip_sample": false
        }
        """;

    [Fact]
    public void ReadsTheSd15FileAndLeavesAbsentKeysNull()
    {
        var config = SchedulerFixture.Sd15Config();
        Assert.Equal(SchedulerFixture.ConfigPath, config.Source);
        Assert.Equal("PNDMScheduler", config.ClassName);
        Assert.Equal(1000, config.NumTrainTimesteps);
        Assert.Equal(0.00085, config.BetaStart);
        Assert.Equal(0.012, config.BetaEnd);
        Assert.Equal("scaled_linear", config.BetaSchedule);
        Assert.Null(config.TrainedBetas);
        Assert.Equal(1, config.StepsOffset);
        Assert.False(config.SetAlphaToOne);
        Assert.True(config.SkipPrkSteps);
        Assert.False(config.ClipSample);
        Assert.Null(config.TimestepSpacing);
        Assert.Null(config.PredictionType);
        Assert.Null(config.UseKarrasSigmas);
        Assert.Null(config.SolverOrder);
        Assert.Null(config.AlgorithmType);
        Assert.Equal(config with { Source = "inline" }, SchedulerConfig.FromJson(Sd15Json, "inline"));
    }

    [Fact]
    public void ReadsEveryKnownKeyAndIgnoresUnknownOnes()
    {
        var config = SchedulerConfig.FromJson("""
            {
              "_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 500, "beta_start": 0.001, "beta_end": 0.02,
              "beta_schedule": "linear", "trained_betas": [0.1, 0.2], "steps_offset": 2, "timestep_spacing": "trailing",
              "prediction_type": "v_prediction", "clip_sample": true, "clip_sample_range": 2.5, "set_alpha_to_one": true,
              "skip_prk_steps": false, "thresholding": false, "rescale_betas_zero_snr": true, "variance_type": "fixed_large",
              "use_karras_sigmas": true, "interpolation_type": "linear", "solver_order": 3, "algorithm_type": "dpmsolver++",
              "solver_type": "heun", "lower_order_final": false, "lambda_min_clipped": -Infinity,
              "sample_max_value": 1.0, "some_future_key": {"nested": [1, 2, NaN]}, "euler_at_final": false
            }
            """, "all-keys");
        Assert.Equal(new SchedulerConfig
        {
            Source = "all-keys", ClassName = "DPMSolverMultistepScheduler", NumTrainTimesteps = 500, BetaStart = 0.001, BetaEnd = 0.02,
            BetaSchedule = "linear", TrainedBetas = config.TrainedBetas, StepsOffset = 2, TimestepSpacing = "trailing",
            PredictionType = "v_prediction", ClipSample = true, ClipSampleRange = 2.5, SetAlphaToOne = true, SkipPrkSteps = false,
            Thresholding = false, RescaleBetasZeroSnr = true, VarianceType = "fixed_large", UseKarrasSigmas = true,
            InterpolationType = "linear", SolverOrder = 3, AlgorithmType = "dpmsolver++", SolverType = "heun",
            LowerOrderFinal = false, LambdaMinClipped = double.NegativeInfinity,
        }, config);
        Assert.Equal([0.1, 0.2], config.TrainedBetas!);
    }

    [Fact]
    public void NonFiniteLiteralsInsideStringsAreLeftAlone()
    {
        var config = SchedulerConfig.FromJson("""{"_class_name": "Infinity \"NaN\" -Infinity", "lambda_min_clipped": NaN}""", "strings");
        Assert.Equal("Infinity \"NaN\" -Infinity", config.ClassName);
        Assert.True(double.IsNaN(config.LambdaMinClipped!.Value));
    }

    [Fact]
    public void AbsentKeysTakeTheReadingClassesDefaults()
    {
        using var scope = torch.NewDisposeScope();
        var config = SchedulerFixture.Sd15Config();
        long[] leading = [951, 901, 851, 801, 751, 701, 651, 601, 551, 501, 451, 401, 351, 301, 251, 201, 151, 101, 51, 1];

        using var ddpm = SchedulerFactory.Create(SchedulerKind.Ddpm, config);
        ddpm.SetTimesteps(20);
        Assert.Equal(leading, ddpm.Timesteps.data<long>().ToArray());

        using var euler = SchedulerFactory.Create(SchedulerKind.EulerDiscrete, config);
        euler.SetTimesteps(4);
        Assert.Equal(torch.float32, euler.Timesteps.dtype);
        Assert.Equal([999f, 666f, 333f, 0f], euler.Timesteps.data<float>().ToArray());

        using var dpm = SchedulerFactory.Create(SchedulerKind.DpmSolverMultistep, config);
        dpm.SetTimesteps(4);
        Assert.Equal([999L, 749, 500, 250], dpm.Timesteps.data<long>().ToArray());
    }

    [Fact]
    public void ClipSampleDefaultsToTrueForDdimButTheSd15FileTurnsItOff()
    {
        using var scope = torch.NewDisposeScope();
        var sample = torch.full([1, 4, 2, 2], 30f);
        var modelOutput = torch.zeros(1, 4, 2, 2);
        var sd15 = SchedulerFixture.Sd15Config();

        using var inherited = new DdimScheduler(sd15);
        inherited.SetTimesteps(10);
        Assert.True(inherited.Step(modelOutput, 0, sample).PredOriginalSample!.max().item<float>() > 1);

        using var classDefault = new DdimScheduler(sd15 with { ClipSample = null });
        classDefault.SetTimesteps(10);
        Assert.Equal(1f, classDefault.Step(modelOutput, 0, sample).PredOriginalSample!.max().item<float>());

        using var ddpm = new DdpmScheduler(sd15 with { ClipSample = null, ClipSampleRange = 2.0 });
        ddpm.SetTimesteps(10);
        Assert.Equal(2f, ddpm.Step(modelOutput, 0, sample, new torch.Generator(1)).PredOriginalSample!.max().item<float>());
    }

    [Fact]
    public void SetAlphaToOneDefaultsToTrueForDdimSoItsLastStepLandsOnX0()
    {
        using var scope = torch.NewDisposeScope();
        var sample = torch.randn([1, 4, 2, 2], generator: new torch.Generator(1));
        var modelOutput = torch.randn([1, 4, 2, 2], generator: new torch.Generator(2));
        var config = SchedulerFixture.Sd15Config() with { StepsOffset = 0 };

        using var classDefault = new DdimScheduler(config with { SetAlphaToOne = null });
        classDefault.SetTimesteps(10);
        var last = classDefault.Step(modelOutput, 9, sample);
        TensorAssert.Identical(last.PredOriginalSample!, last.PrevSample, "prev_sample at t=0 with alpha_prev = 1");

        using var sd15 = new DdimScheduler(config);
        sd15.SetTimesteps(10);
        var sdLast = sd15.Step(modelOutput, 9, sample);
        Assert.False(TensorAssert.BitEqual(sdLast.PredOriginalSample!, sdLast.PrevSample));
    }

    [Fact]
    public void TrainedBetasReplaceTheSchedule()
    {
        double[] betas = [0.001, 0.002, 0.0035, 0.1];
        using var scheduler = new DdpmScheduler(SchedulerFixture.Sd15Config() with { NumTrainTimesteps = 4, TrainedBetas = betas });
        Assert.Equal(betas.Select(b => (float)b), scheduler.Betas.data<float>().ToArray());
        float product = 1;
        var expected = betas.Select(b => product *= 1 - (float)b).ToArray();
        Assert.Equal(expected, scheduler.AlphasCumprod.data<float>().ToArray(), (a, b) => Math.Abs(a - b) < 1e-7);

        var error = Assert.Throws<ModelConfigException>(() => new DdpmScheduler(SchedulerFixture.Sd15Config() with { TrainedBetas = betas }));
        Assert.Equal("trained_betas", error.Key);
    }

    public static TheoryData<SchedulerKind, string, string, string> UnsupportedValues => new()
    {
        { SchedulerKind.Ddim, "beta_schedule", "\"foo\"", "'foo'" },
        { SchedulerKind.Ddim, "beta_schedule", "\"sigmoid\"", "'sigmoid'" },
        { SchedulerKind.EulerDiscrete, "prediction_type", "\"bar\"", "'bar'" },
        { SchedulerKind.EulerAncestralDiscrete, "prediction_type", "\"sample\"", "'sample'" },
        { SchedulerKind.Pndm, "prediction_type", "\"sample\"", "'sample'" },
        { SchedulerKind.Ddpm, "thresholding", "true", "true" },
        { SchedulerKind.DpmSolverMultistep, "thresholding", "true", "true" },
        { SchedulerKind.DpmSolverMultistep, "algorithm_type", "\"sde-dpmsolver++\"", "'sde-dpmsolver++'" },
        { SchedulerKind.DpmSolverMultistep, "algorithm_type", "\"dpmsolver\"", "'dpmsolver'" },
        { SchedulerKind.DpmSolverMultistep, "solver_order", "4", "4" },
        { SchedulerKind.DpmSolverMultistep, "solver_type", "\"rk4\"", "'rk4'" },
        { SchedulerKind.DpmSolverMultistep, "variance_type", "\"learned_range\"", "'learned_range'" },
        { SchedulerKind.Ddpm, "variance_type", "\"learned\"", "'learned'" },
        { SchedulerKind.Ddim, "timestep_spacing", "\"weird\"", "'weird'" },
        { SchedulerKind.EulerDiscrete, "interpolation_type", "\"log_linear\"", "'log_linear'" },
        { SchedulerKind.Pndm, "num_train_timesteps", "1", "1" },
        { SchedulerKind.Pndm, "steps_offset", "-1", "-1" },
    };

    [Theory]
    [MemberData(nameof(UnsupportedValues))]
    public void UnsupportedValuesAreRefusedNamingFileKeyAndValue(SchedulerKind kind, string key, string json, string shownValue)
    {
        var document = JsonNode.Parse(Sd15Json)!.AsObject();
        document[key] = JsonNode.Parse(json);
        var config = SchedulerConfig.FromJson(document.ToJsonString(), "my/scheduler_config.json");
        var error = Assert.Throws<ModelConfigException>(() => SchedulerFactory.Create(kind, config).Dispose());
        Assert.Equal("my/scheduler_config.json", error.FilePath);
        Assert.Equal(key, error.Key);
        Assert.Equal(shownValue, error.Value);
        Assert.Contains($"'{key}'", error.Message);
    }

    [Fact]
    public void SupportedAlternativesAreAccepted()
    {
        var config = SchedulerFixture.Sd15Config();
        using var sigmoid = SchedulerFactory.Create(SchedulerKind.Ddpm, config with { BetaSchedule = "sigmoid" });
        using var cosine = SchedulerFactory.Create(SchedulerKind.Ddim, config with { BetaSchedule = "squaredcos_cap_v2", RescaleBetasZeroSnr = true, PredictionType = "v_prediction" });
        using var deis = SchedulerFactory.Create(SchedulerKind.DpmSolverMultistep, config with { AlgorithmType = "deis", SolverType = "bh2", SolverOrder = 3 });
        using var vEuler = SchedulerFactory.Create(SchedulerKind.EulerDiscrete, config with { PredictionType = "v_prediction", TimestepSpacing = "trailing" });
        using var prk = SchedulerFactory.Create(SchedulerKind.Pndm, config with { SkipPrkSteps = false });
        using var ancestralKarras = SchedulerFactory.Create(SchedulerKind.EulerAncestralDiscrete, config with { UseKarrasSigmas = true });
        Assert.Equal(SchedulerKind.EulerAncestralDiscrete, ancestralKarras.Kind);
    }

    [Theory]
    [InlineData("{\"beta_start\": \"abc\"}", "beta_start", "\"abc\"")]
    [InlineData("{\"num_train_timesteps\": 1.5}", "num_train_timesteps", "1.5")]
    [InlineData("{\"clip_sample\": \"no\"}", "clip_sample", "\"no\"")]
    [InlineData("{\"trained_betas\": [0.1, \"x\"]}", "trained_betas", "\"x\"")]
    [InlineData("{\"beta_schedule\": 3}", "beta_schedule", "3")]
    public void ValuesOfTheWrongTypeAreRefusedNamingTheKey(string json, string key, string value)
    {
        var error = Assert.Throws<ModelConfigException>(() => SchedulerConfig.FromJson(json, "typed.json"));
        Assert.Equal(key, error.Key);
        Assert.Equal(value, error.Value);
        Assert.Contains("typed.json", error.Message);
    }

    [Fact]
    public void BrokenOrMissingFilesAreReportedWithTheirPath()
    {
        Assert.Contains("bad.json", Assert.Throws<InvalidModelFileException>(() => SchedulerConfig.FromJson("{ nope", "bad.json")).Message);
        Assert.Contains("not a JSON object", Assert.Throws<InvalidModelFileException>(() => SchedulerConfig.FromJson("[1]", "list.json")).Message);
        using var temp = new TempDirectory();
        string missing = temp.File("scheduler_config.json");
        Assert.Equal(missing, Assert.Throws<InvalidModelFileException>(() => SchedulerConfig.FromFile(missing)).FilePath);
    }

    [Fact]
    public void FactoryFollowsTheConfigsClassName()
    {
        using var sd15 = SchedulerFactory.Create(SchedulerFixture.Sd15Config());
        Assert.IsType<PndmScheduler>(sd15);
        using var euler = SchedulerFactory.Create(SchedulerFixture.Sd15Config() with { ClassName = "EulerAncestralDiscreteScheduler" });
        Assert.IsType<EulerAncestralDiscreteScheduler>(euler);
        var error = Assert.Throws<ModelConfigException>(() => SchedulerFactory.Create(SchedulerFixture.Sd15Config() with { ClassName = "LMSDiscreteScheduler" }));
        Assert.Equal("_class_name", error.Key);
        Assert.Contains("DPMSolverMultistepScheduler", error.Message);
    }
}
