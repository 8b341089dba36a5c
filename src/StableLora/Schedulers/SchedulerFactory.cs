namespace StableLora.Schedulers;

/// <summary>Creates schedulers from a config, as diffusers' <c>&lt;SchedulerClass&gt;.from_config(config)</c>.</summary>
internal static class SchedulerFactory
{
    /// <summary>A scheduler of <paramref name="kind"/> reading <paramref name="config"/> (absent keys take that class's defaults).</summary>
    public static IScheduler Create(SchedulerKind kind, SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return kind switch
        {
            SchedulerKind.Pndm => new PndmScheduler(config),
            SchedulerKind.Ddim => new DdimScheduler(config),
            SchedulerKind.Ddpm => new DdpmScheduler(config),
            SchedulerKind.EulerDiscrete => new EulerDiscreteScheduler(config),
            SchedulerKind.EulerAncestralDiscrete => new EulerAncestralDiscreteScheduler(config),
            SchedulerKind.DpmSolverMultistep => new DpmSolverMultistepScheduler(config),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a scheduler kind"),
        };
    }

    /// <summary>The scheduler class named by the config's <c>_class_name</c> (what a pipeline folder uses by default).</summary>
    public static IScheduler Create(SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.ClassName is null)
            throw new ModelConfigException(config.Source, "_class_name", null, "the config does not name its scheduler class; choose one explicitly");
        if (!SchedulerKindNames.ClassNames.Contains(config.ClassName))
            throw config.Unsupported("_class_name", config.ClassName, $"supported scheduler classes: {string.Join(", ", SchedulerKindNames.ClassNames)}");
        return Create(SchedulerKindNames.Parse(config.ClassName), config);
    }
}
