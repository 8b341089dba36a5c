using TorchSharp;

namespace StableLora.Schedulers;

/// <summary>
/// A diffusers noise scheduler, stepped by loop index. Typical use, as in the diffusers pipeline:
/// <code>
/// scheduler.SetTimesteps(steps);
/// latents = noise * scheduler.InitNoiseSigma;
/// for (int i = 0; i &lt; scheduler.StepCount; i++)
/// {
///     var input = scheduler.ScaleModelInput(latents, i);
///     var output = unet(input, scheduler.TimestepAt(i));
///     latents = scheduler.Step(output, i, latents, generator).PrevSample;
/// }
/// </code>
/// Multistep schedulers (PNDM, DPM-Solver) keep the previous model outputs; <see cref="SetTimesteps"/> clears them,
/// so call it before every generation. The scheduler owns <see cref="Timesteps"/> and its history; dispose it when done.
/// </summary>
internal interface IScheduler : IDisposable
{
    SchedulerKind Kind { get; }

    SchedulerConfig Config { get; }

    /// <summary>
    /// The timesteps of the current schedule, one per step (PNDM repeats one), on the CPU, dtype as diffusers:
    /// int64 for DDPM/DDIM/PNDM/DPM-Solver, float32 for the Euler schedulers (float64 with Karras sigmas). Owned by the
    /// scheduler: do not dispose; it is replaced by the next <see cref="SetTimesteps"/>.
    /// </summary>
    torch.Tensor Timesteps { get; }

    /// <summary>The number of loop steps of the current schedule (the length of <see cref="Timesteps"/>).</summary>
    int StepCount { get; }

    /// <summary>The factor the pipeline multiplies its initial noise by.</summary>
    double InitNoiseSigma { get; }

    /// <summary>Lays out the timesteps for <paramref name="numInferenceSteps"/> and resets the per-generation state.</summary>
    void SetTimesteps(int numInferenceSteps);

    /// <summary>The timestep of step <paramref name="stepIndex"/> as a new 0-dim tensor of the <see cref="Timesteps"/> dtype.</summary>
    torch.Tensor TimestepAt(int stepIndex);

    /// <summary>The model input for step <paramref name="stepIndex"/>: a new tensor (possibly sharing storage with <paramref name="sample"/>).</summary>
    torch.Tensor ScaleModelInput(torch.Tensor sample, int stepIndex);

    /// <summary>
    /// One denoising step from timestep <paramref name="stepIndex"/> to the next. Noise, where the scheduler draws any,
    /// comes from <paramref name="generator"/> as diffusers' <c>randn_tensor</c> draws it (on the CPU for a CPU generator).
    /// </summary>
    SchedulerStepOutput Step(torch.Tensor modelOutput, int stepIndex, torch.Tensor sample, torch.Generator? generator = null);

    /// <summary>
    /// img2img: the first <see cref="Step"/> after this call is at <paramref name="stepIndex"/>, as when diffusers'
    /// <c>StableDiffusionImg2ImgPipeline</c> calls <c>step()</c> with <c>timesteps[t_start:]</c> on a freshly set
    /// scheduler (0.21.4 has no <c>set_begin_index</c>): multistep schedulers start their history and counters empty
    /// there. Call it after <see cref="SetTimesteps"/> and before the first step.
    /// </summary>
    void BeginAt(int stepIndex);

    /// <summary>
    /// diffusers' <c>add_noise(original_samples, noise, timesteps)</c> at the timestep of step <paramref name="stepIndex"/>
    /// (the same for every sample of the batch): sqrt(acp) x0 + sqrt(1 - acp) noise for the alpha schedulers, x0 + sigma
    /// noise for the Euler ones. A new tensor.
    /// </summary>
    torch.Tensor AddNoise(torch.Tensor originalSamples, torch.Tensor noise, int stepIndex);
}

/// <summary>The result of <see cref="IScheduler.Step"/>; new tensors that the caller owns.</summary>
/// <param name="PrevSample">The sample at the next (less noisy) timestep.</param>
/// <param name="PredOriginalSample">The predicted denoised sample x0, for schedulers that report one (not PNDM, DPM-Solver).</param>
internal sealed record SchedulerStepOutput(torch.Tensor PrevSample, torch.Tensor? PredOriginalSample) : IDisposable
{
    public void Dispose()
    {
        PrevSample.Dispose();
        PredOriginalSample?.Dispose();
    }
}
