using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Tests.Training;

/// <summary>AdamW, gradient clipping and the cosine schedule against the fixture's training_step case, fed the stored gradients.</summary>
public sealed class OptimizerParityTests
{
    private const string File = "training.safetensors";

    [Fact]
    public void AdamWFedTheStoredGradientsMatchesTorchAfterOneAndThreeSteps()
    {
        using var scope = NewDisposeScope();
        var parameters = FixtureLoraParameters();
        using var optimizer = new AdamWOptimizer(parameters, new AdamWSettings());
        Assert.True(optimizer.IsFlat, "LoRA parameters take the flat (whole-buffer) update path");
        var tolerance = FixtureCases.Tolerance("training_step", "params_after_adamw");

        SetGrads(parameters, "grad");
        optimizer.Step(1e-4);
        foreach (var (name, parameter) in parameters)
            TensorAssert.Close(ExpectedTensors.Read(File, $"adamw_step1.{name}"), parameter, tolerance, $"step 1 {name}");

        foreach (var step in new[] { 2, 3 })
        {
            optimizer.ZeroGrad();
            SetGrads(parameters, $"adamw_grad_step{step}");
            optimizer.Step(1e-4);
        }

        foreach (var (name, parameter) in parameters)
            TensorAssert.Close(ExpectedTensors.Read(File, $"adamw_step3.{name}"), parameter, tolerance, $"step 3 {name}");
    }

    [Fact]
    public void ClippingToNormOneThenAdamWMatchesTorch()
    {
        using var scope = NewDisposeScope();
        var parameters = FixtureLoraParameters();
        using var optimizer = new AdamWOptimizer(parameters, new AdamWSettings());
        SetGrads(parameters, "grad");
        double norm = GradientClipping.ClipByTotalNorm(parameters.Select(p => p.Parameter), 1.0).item<float>();
        double expectedNorm = FixtureCases.Case("training_step").GetProperty("clip_grad_norm_returned")[0].GetDouble();
        Assert.Equal(expectedNorm, norm, 6);
        TensorAssert.Close(ExpectedTensors.Read(File, "grad_total_norm"), tensor(new[] { (float)norm }), FixtureCases.Tolerance("training_step", "grads"), "total norm");
        optimizer.Step(1e-4);
        var tolerance = FixtureCases.Tolerance("training_step", "params_after_adamw");
        foreach (var (name, parameter) in parameters)
            TensorAssert.Close(ExpectedTensors.Read(File, $"adamw_clip_step1.{name}"), parameter, tolerance, name);
    }

    [Fact]
    public void CosineWithWarmupMultipliersMatchDiffusersExactly()
    {
        using var scope = NewDisposeScope();
        var expected = ExpectedTensors.Read(File, "cosine_lr_multipliers_f64");
        var expected32 = ExpectedTensors.Read(File, "cosine_lr_multipliers");
        for (int step = 0; step <= 100; step++)
        {
            double multiplier = CosineWithWarmup.Multiplier(step, warmupSteps: 10, trainingSteps: 100);
            Assert.Equal(expected[step].item<double>(), multiplier);
            Assert.Equal(expected32[step].item<float>(), (float)multiplier);
        }
    }

    private static List<(string Name, Parameter Parameter)> FixtureLoraParameters()
    {
        using var reader = TorchPickleReader.Open(Path.Combine(FixturePaths.TinySd, "lora_weights.pt"));
        return reader.Tensors.Select(t => (t.Name, new Parameter(reader.Read(t.Name), requires_grad: true))).ToList();
    }

    private static void SetGrads(List<(string Name, Parameter Parameter)> parameters, string prefix)
    {
        foreach (var (name, parameter) in parameters)
            parameter.grad = ExpectedTensors.Read(File, $"{prefix}.{name}");
    }
}
