namespace StableLora.Tests.Api;

/// <summary>Setting one option never silently resets another.</summary>
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
}
