using StableLora.Schedulers;
using TorchSharp;

namespace StableLora.Tests.Schedulers;

/// <summary>IScheduler.BeginAt (image to image, issue 16, item 5): the multistep schedulers start their history at a later step.</summary>
public sealed class BeginAtTests
{
    [Theory]
    [InlineData(SchedulerKind.Pndm)]
    [InlineData(SchedulerKind.DpmSolverMultistep)]
    public void MultistepSchedulersStepOnFromTheBeginningGivenAndRefuseALateBeginAt(SchedulerKind kind)
    {
        using var scope = torch.NewDisposeScope();
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config());
        scheduler.SetTimesteps(10);
        scheduler.BeginAt(3);
        var sample = torch.ones(1, 4, 2, 2);
        var output = torch.zeros(1, 4, 2, 2);
        Assert.Throws<InvalidOperationException>(() => scheduler.Step(output, 0, sample));
        sample = scheduler.Step(output, 3, sample).PrevSample;
        Assert.Throws<InvalidOperationException>(() => scheduler.BeginAt(5));
        sample = scheduler.Step(output, 4, sample).PrevSample;
        Assert.False(sample.isnan().any().item<bool>());

        // SetTimesteps starts over from step 0.
        scheduler.SetTimesteps(10);
        scheduler.Step(output, 0, sample).Dispose();
    }

    [Theory]
    [InlineData(SchedulerKind.Pndm)]
    [InlineData(SchedulerKind.Ddim)]
    [InlineData(SchedulerKind.EulerDiscrete)]
    public void BeginAtOutsideTheScheduleIsRefused(SchedulerKind kind)
    {
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config());
        scheduler.SetTimesteps(4);
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.BeginAt(scheduler.StepCount));
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.BeginAt(-1));
    }
}
