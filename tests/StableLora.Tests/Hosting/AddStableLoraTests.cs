using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using StableLora.Extensions.Hosting;
using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Hosting;

/// <summary>
/// services.AddStableLora: one generator per provider, loaded from bound options, that draws what a generator built
/// directly with the same settings draws, and a clear error when the model is missing.
/// </summary>
public sealed class AddStableLoraTests : IClassFixture<AddStableLoraTests.DemoModel>
{
    private readonly DemoModel _demo;

    public AddStableLoraTests(DemoModel demo) => _demo = demo;

    [Fact]
    public void The_registered_generator_is_one_instance_and_draws_as_a_directly_built_one()
    {
        var services = new ServiceCollection().AddStableLora(o =>
        {
            o.Model = _demo.Path;
            o.Device = "cpu";
            o.Scheduler = SchedulerKind.DpmSolverMultistep;
        });
        var options = new GenerationOptions { Steps = 8, Seed = 3 };
        byte[] served;
        using (var provider = services.BuildServiceProvider())
        {
            var generator = provider.GetRequiredService<StableDiffusionGenerator>();
            Assert.Same(generator, provider.GetRequiredService<StableDiffusionGenerator>());
            using var result = generator.Generate("a sketch of a star", options);
            served = result.GetPixels(0).Pixels;
            Assert.Equal("DPM++ 2M", result.Parameters.Sampler);
        }

        using var direct = StableDiffusionGenerator.FromPretrained(_demo.Path).WithDevice("cpu").WithScheduler(SchedulerKind.DpmSolverMultistep).Build();
        using var expected = direct.Generate("a sketch of a star", options);
        Assert.Equal(expected.GetPixels(0).Pixels, served);
    }

    [Fact]
    public void Options_bind_from_a_configuration_section()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["StableLora:Model"] = _demo.Path,
            ["StableLora:Device"] = "cpu",
            ["StableLora:Scheduler"] = "EulerAncestralDiscrete",
            ["StableLora:DType"] = "Float32",
        }).Build();
        using var provider = new ServiceCollection().AddStableLora(configuration.GetSection("StableLora")).BuildServiceProvider();
        var options = provider.GetRequiredService<IOptions<StableLoraOptions>>().Value;
        Assert.Equal((_demo.Path, "cpu", SchedulerKind.EulerAncestralDiscrete), (options.Model, options.Device, options.Scheduler));
        using var result = provider.GetRequiredService<StableDiffusionGenerator>().Generate("a sketch of a circle", new GenerationOptions { Steps = 4, Seed = 1 });
        Assert.Equal("Euler a", result.Parameters.Sampler);
    }

    [Fact]
    public void A_missing_model_is_an_options_error_that_names_it()
    {
        using var provider = new ServiceCollection().AddStableLora(o => o.Device = "cpu").BuildServiceProvider();
        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<StableDiffusionGenerator>());
        Assert.Contains("StableLoraOptions.Model", error.Message, StringComparison.Ordinal);
    }

    /// <summary>The built-in demo model, written once for the class.</summary>
    public sealed class DemoModel : IDisposable
    {
        private readonly TempDirectory _temp = new();

        public DemoModel()
        {
            Path = _temp.File("demo-model");
            DemoPipeline.Create(Path);
        }

        public string Path { get; }

        public void Dispose() => _temp.Dispose();
    }
}
