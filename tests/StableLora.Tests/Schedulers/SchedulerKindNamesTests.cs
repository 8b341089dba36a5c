using StableLora.Schedulers;

namespace StableLora.Tests.Schedulers;

public sealed class SchedulerKindNamesTests
{
    [Theory]
    [InlineData("pndm", SchedulerKind.Pndm)]
    [InlineData("ddim", SchedulerKind.Ddim)]
    [InlineData("ddpm", SchedulerKind.Ddpm)]
    [InlineData("euler", SchedulerKind.EulerDiscrete)]
    [InlineData("euler-a", SchedulerKind.EulerAncestralDiscrete)]
    [InlineData("dpmpp-2m", SchedulerKind.DpmSolverMultistep)]
    [InlineData("Euler-A", SchedulerKind.EulerAncestralDiscrete)]
    [InlineData("PNDMScheduler", SchedulerKind.Pndm)]
    [InlineData("DDIMScheduler", SchedulerKind.Ddim)]
    [InlineData("DDPMScheduler", SchedulerKind.Ddpm)]
    [InlineData("EulerDiscreteScheduler", SchedulerKind.EulerDiscrete)]
    [InlineData("EulerAncestralDiscreteScheduler", SchedulerKind.EulerAncestralDiscrete)]
    [InlineData("DPMSolverMultistepScheduler", SchedulerKind.DpmSolverMultistep)]
    public void ParsesCliAndDiffusersClassNames(string name, SchedulerKind expected)
    {
        Assert.Equal(expected, SchedulerKindNames.Parse(name));
        Assert.True(SchedulerKindNames.TryParse(name, out var kind));
        Assert.Equal(expected, kind);
    }

    [Fact]
    public void NamesRoundTrip()
    {
        foreach (var kind in Enum.GetValues<SchedulerKind>())
        {
            Assert.Equal(kind, SchedulerKindNames.Parse(SchedulerKindNames.CliName(kind)));
            Assert.Equal(kind, SchedulerKindNames.Parse(SchedulerKindNames.ClassName(kind)));
        }
        Assert.Equal(["pndm", "ddim", "ddpm", "euler", "euler-a", "dpmpp-2m"], SchedulerKindNames.CliNames);
    }

    [Theory]
    [InlineData("lms")]
    [InlineData("dpmpp-2m-karras")]
    [InlineData("pndmscheduler")]
    [InlineData("")]
    public void UnknownNamesAreRefusedListingTheValidOnes(string name)
    {
        var error = Assert.Throws<ArgumentException>(() => SchedulerKindNames.Parse(name));
        Assert.Contains($"'{name}'", error.Message);
        foreach (var valid in SchedulerKindNames.CliNames.Concat(SchedulerKindNames.ClassNames))
            Assert.Contains(valid, error.Message);
        Assert.False(SchedulerKindNames.TryParse(name, out _));
    }
}
