using static TorchSharp.torch;

namespace StableLora;

/// <summary>
/// The settings of one text-to-image call, with diffusers' <c>StableDiffusionPipeline</c> defaults. Everything is
/// checked when <see cref="StableDiffusionGenerator.Generate"/> is called, which throws an
/// <see cref="InvalidOptionsException"/> naming every option that is out of range.
/// </summary>
public sealed record GenerationOptions
{
    /// <summary>What the image should not show (classifier-free guidance's unconditional prompt); null means "".</summary>
    public string? NegativePrompt { get; init; }

    /// <summary>Image width in pixels, a multiple of the VAE factor (8 for SD); null: the model's default (512 for SD 1.5).</summary>
    public int? Width { get; init; }

    /// <summary>Image height in pixels, a multiple of the VAE factor (8 for SD); null: the model's default.</summary>
    public int? Height { get; init; }

    /// <summary>Denoising steps, from 1 to the scheduler's num_train_timesteps (1000 for SD); 4 or more for PNDM with skip_prk_steps false.</summary>
    /// <value>The default value is 50 (diffusers' default).</value>
    public int Steps { get; init; } = 50;

    /// <summary>Classifier-free guidance scale; at 1 or below no unconditional pass is made.</summary>
    /// <value>The default value is 7.5.</value>
    public double GuidanceScale { get; init; } = 7.5;

    /// <summary>Images per call (one random draw for the whole batch, as diffusers' num_images_per_prompt).</summary>
    /// <value>The default value is 1.</value>
    public int ImageCount { get; init; } = 1;

    /// <summary>
    /// The seed of <c>torch.Generator("cpu").manual_seed(seed)</c>: on the CPU in float32 the same seed, scheduler, steps,
    /// guidance and size give diffusers' image. Null draws a fresh seed (reported in the result).
    /// </summary>
    public ulong? Seed { get; init; }

    /// <summary>Start from these latents [count, 4, height/8, width/8] instead of drawing them (diffusers' <c>latents=</c>).</summary>
    public Tensor? InitialLatents { get; init; }

    /// <summary>
    /// LoRAs for this call only, applied after the generator's own (<see cref="StableDiffusionGeneratorBuilder.WithLora(string, double, double?)"/>)
    /// in this order: the images equal those of a generator built with all of them. Empty: only the generator's.
    /// </summary>
    public IReadOnlyList<LoraSelection> Loras { get; init; } = Array.Empty<LoraSelection>();

    /// <summary>
    /// Attach a cheap preview (<see cref="GenerationProgress.Preview"/>) to every progress report: a linear map of the
    /// latents to RGB, no VAE (about a millisecond at 512 px). Off by default.
    /// </summary>
    public bool Previews { get; init; }

    /// <summary>Multiplies every LoRA's weight (diffusers' <c>cross_attention_kwargs={"scale": s}</c>).</summary>
    /// <value>The default value is 1.</value>
    public double LoraScale { get; init; } = 1.0;
}

/// <summary>A snapshot of generation progress after each denoising step (one UNet evaluation).</summary>
/// <param name="Step">UNet evaluations done (1 after the first); never more than <paramref name="TotalSteps"/>, and the last report of a call equals it.</param>
/// <param name="TotalSteps">
/// UNet evaluations in this call (<see cref="StableDiffusionGenerator.ModelEvaluationCount"/>): the steps asked for,
/// except that PNDM, as in diffusers, makes one more from 2 steps on (and 9 more with Runge-Kutta warm-up steps).
/// </param>
/// <param name="Elapsed">Time since the call started.</param>
public readonly record struct GenerationProgress(int Step, int TotalSteps, TimeSpan Elapsed)
{
    /// <summary>
    /// With <see cref="GenerationOptions.Previews"/>: a cheap preview of the first image as it stands after this step, at
    /// latent resolution (an eighth of the image's size), mapped from the latents without the VAE; else null.
    /// </summary>
    public RgbImage? Preview { get; init; }
}

/// <summary>The precision the generator's models compute in.</summary>
public enum ModelDType
{
    /// <summary>float32: exact parity with diffusers on the CPU.</summary>
    Float32,

    /// <summary>float16 (GPU). The VAE decodes in float32 unless asked otherwise (SD's VAE overflows in fp16).</summary>
    Float16,

    /// <summary>bfloat16.</summary>
    BFloat16,
}
