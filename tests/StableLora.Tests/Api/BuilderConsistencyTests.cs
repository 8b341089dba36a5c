using StableLora.Tests.Infrastructure;

namespace StableLora.Tests.Api;

/// <summary>The two builders behave alike: setting one option never silently resets another, each With* checks its value, and both are single-use.</summary>
public sealed class BuilderConsistencyTests
{
    [Fact]
    public void ACallThatDoesNotMentionASettingLeavesItAsItWas()
    {
        var options = LoraTrainingBuilder.FromPretrained("model")
            .WithCaption("a photo", useCaptionFiles: true)
            .WithResolution(256, randomCrop: true, randomFlip: true)
            .WithMixedPrecision(MixedPrecision.Fp16, vaeInFloat32: false)
            .WithCaption("another caption")
            .WithResolution(512)
            .WithMixedPrecision(MixedPrecision.Bf16)
            .Options;
        Assert.Equal(("another caption", true), (options.Caption, options.UseCaptionFiles));
        Assert.Equal((512, true, true), (options.Resolution, options.RandomCrop, options.RandomFlip));
        Assert.Equal((MixedPrecision.Bf16, false), (options.MixedPrecision, options.VaeInFloat32));

        var cleared = LoraTrainingBuilder.FromPretrained("model").WithResolution(64, randomCrop: true).WithResolution(64, randomCrop: false).Options;
        Assert.False(cleared.RandomCrop);
    }

    [Fact]
    public void BothBuildersAreSingleUseAndCheckEachValueWhenItIsSet()
    {
        var generatorBuilder = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithDevice("cpu");
        using (generatorBuilder.Build())
        {
        }

        Assert.Contains("already built", Assert.Throws<InvalidOperationException>(() => generatorBuilder.Build()).Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => generatorBuilder.WithDevice("cpu"));

        var trainingBuilder = LoraTrainingBuilder.FromPretrained(FixturePaths.TinyPipeline).WithDataset(FixturePaths.Root);
        trainingBuilder.Build();
        Assert.Throws<InvalidOperationException>(() => trainingBuilder.Build());
        Assert.Throws<InvalidOperationException>(() => trainingBuilder.WithRank(8));

        var fresh = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline);
        Assert.Equal("Device", Assert.Throws<InvalidOptionsException>(() => fresh.WithDevice("gpu0")).Errors.Single().Option);
        Assert.Throws<InvalidOptionsException>(() => fresh.WithLora("x.safetensors", double.NaN));
        Assert.Throws<InvalidOptionsException>(() => fresh.WithLora("x.safetensors", 1.0, double.PositiveInfinity));
        Assert.Throws<InvalidOptionsException>(() => fresh.WithVaeTiling(100));
        Assert.Throws<InvalidOptionsException>(() => fresh.WithAttentionSlicing(0));
        Assert.Throws<InvalidOptionsException>(() => fresh.WithDType((ModelDType)7));
        Assert.Throws<InvalidOptionsException>(() => fresh.WithVariant(" "));
        using var stillUsable = fresh.WithDevice("cpu").Build();
    }
}
