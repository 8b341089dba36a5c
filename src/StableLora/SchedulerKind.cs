namespace StableLora;

/// <summary>The noise schedulers StableLora implements, each matching the diffusers 0.21.4 class of the same name.</summary>
public enum SchedulerKind
{
    /// <summary>PNDM (<c>PNDMScheduler</c>; PLMS when <c>skip_prk_steps</c> is true, as in the SD 1.5 config). CLI name <c>pndm</c>.</summary>
    Pndm,

    /// <summary>DDIM (<c>DDIMScheduler</c>), deterministic with eta = 0. CLI name <c>ddim</c>.</summary>
    Ddim,

    /// <summary>DDPM (<c>DDPMScheduler</c>): the training noise schedule, and ancestral sampling. CLI name <c>ddpm</c>.</summary>
    Ddpm,

    /// <summary>Euler (<c>EulerDiscreteScheduler</c>). CLI name <c>euler</c>.</summary>
    EulerDiscrete,

    /// <summary>Euler ancestral (<c>EulerAncestralDiscreteScheduler</c>), which draws fresh noise every step. CLI name <c>euler-a</c>.</summary>
    EulerAncestralDiscrete,

    /// <summary>DPM-Solver++ multistep (<c>DPMSolverMultistepScheduler</c>; 2M by default). CLI name <c>dpmpp-2m</c>.</summary>
    DpmSolverMultistep,
}

/// <summary>Names of <see cref="SchedulerKind"/> values: command-line names and diffusers class names.</summary>
public static class SchedulerKindNames
{
    private static readonly (SchedulerKind Kind, string Cli, string ClassName)[] Names =
    [
        (SchedulerKind.Pndm, "pndm", "PNDMScheduler"),
        (SchedulerKind.Ddim, "ddim", "DDIMScheduler"),
        (SchedulerKind.Ddpm, "ddpm", "DDPMScheduler"),
        (SchedulerKind.EulerDiscrete, "euler", "EulerDiscreteScheduler"),
        (SchedulerKind.EulerAncestralDiscrete, "euler-a", "EulerAncestralDiscreteScheduler"),
        (SchedulerKind.DpmSolverMultistep, "dpmpp-2m", "DPMSolverMultistepScheduler"),
    ];

    /// <summary>The command-line names, e.g. <c>pndm</c>, <c>euler-a</c>, <c>dpmpp-2m</c>.</summary>
    public static IReadOnlyList<string> CliNames { get; } = Names.Select(n => n.Cli).ToArray();

    /// <summary>The diffusers class names, e.g. <c>PNDMScheduler</c>.</summary>
    public static IReadOnlyList<string> ClassNames { get; } = Names.Select(n => n.ClassName).ToArray();

    /// <summary>The command-line name of <paramref name="kind"/>.</summary>
    public static string CliName(SchedulerKind kind) => Entry(kind).Cli;

    /// <summary>The diffusers class name of <paramref name="kind"/>.</summary>
    public static string ClassName(SchedulerKind kind) => Entry(kind).ClassName;

    /// <summary>
    /// Parses a command-line name (case-insensitive) or a diffusers class name (case-sensitive, as in
    /// <c>_class_name</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The name is not known; the message lists the valid names.</exception>
    public static SchedulerKind Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (TryParse(name, out var kind))
            return kind;
        throw new ArgumentException(
            $"Unknown scheduler '{name}'. Valid names: {string.Join(", ", CliNames)} " +
            $"(or the diffusers class names {string.Join(", ", ClassNames)}).",
            nameof(name));
    }

    /// <summary>Like <see cref="Parse"/>, without throwing.</summary>
    public static bool TryParse(string? name, out SchedulerKind kind)
    {
        foreach (var entry in Names)
        {
            if (string.Equals(name, entry.Cli, StringComparison.OrdinalIgnoreCase) || string.Equals(name, entry.ClassName, StringComparison.Ordinal))
            {
                kind = entry.Kind;
                return true;
            }
        }
        kind = default;
        return false;
    }

    private static (SchedulerKind Kind, string Cli, string ClassName) Entry(SchedulerKind kind)
    {
        foreach (var entry in Names)
        {
            if (entry.Kind == kind)
                return entry;
        }
        throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a scheduler kind");
    }
}
