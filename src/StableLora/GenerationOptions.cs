using static TorchSharp.torch;

namespace StableLora;

/// <summary>
/// The settings of one text-to-image call (or image-to-image call, with <see cref="InitImage"/>), with diffusers'
/// <c>StableDiffusionPipeline</c> defaults. Everything is
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

    /// <summary>
    /// Start from these latents [count, 4, height/8, width/8] instead of drawing them (diffusers' <c>latents=</c>). Set and
    /// read by TorchSharp users through <see cref="Advanced.TensorAccess.WithInitialLatents"/> and
    /// <see cref="Advanced.TensorAccess.GetInitialLatents"/>.
    /// </summary>
    internal Tensor? InitialLatents { get; init; }

    /// <summary>
    /// Image to image: start from this picture instead of pure noise, as diffusers' <c>StableDiffusionImg2ImgPipeline</c>
    /// (its <c>image</c>) and AUTOMATIC1111's img2img do. The picture is mapped to [-1, 1], encoded with the VAE (a sample
    /// of its latent distribution drawn from the seeded generator), noised to the timestep <see cref="Strength"/> selects,
    /// and denoised from there. Without <see cref="Width"/> and <see cref="Height"/> the output has the picture's size
    /// rounded down to a multiple of the VAE factor (as diffusers); a picture of another size is resized with PIL's
    /// Lanczos filter, as diffusers resizes it.
    /// Cannot be combined with initial latents (<see cref="Advanced.TensorAccess.WithInitialLatents"/>).
    /// </summary>
    public RgbImage? InitImage { get; init; }

    /// <summary>
    /// How much of <see cref="InitImage"/> is repainted, from 0 (exclusive) to 1: the last int(Steps * Strength) of the
    /// Steps timesteps are run (diffusers' <c>strength</c>, A1111's "Denoising strength"); 1 starts from noise at the
    /// first timestep and keeps little of the picture. Only with <see cref="InitImage"/>; null means 0.8, diffusers' default.
    /// </summary>
    public double? Strength { get; init; }

    /// <summary>diffusers' default <c>strength</c>, used when <see cref="Strength"/> is null.</summary>
    public const double DefaultStrength = 0.8;

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

    /// <summary>
    /// CLIP skip, numbered as AUTOMATIC1111's "Clip skip" and kohya's <c>clip_skip</c>: 1 conditions on the text encoder's
    /// last layer (diffusers' default), 2 on the penultimate layer's output passed through the final LayerNorm, and so on,
    /// up to the text encoder's layer count (12 for SD 1.5). diffusers' <c>clip_skip</c> counts the layers skipped, so its
    /// <c>clip_skip=1</c> is this 2. When not 1 it is written into the image's parameters text as <c>Clip skip: n</c>.
    /// </summary>
    /// <value>The default value is 1 (no skip).</value>
    public int ClipSkip { get; init; } = 1;

    /// <summary>What is done with a prompt (or negative prompt) longer than CLIP's 75 tokens.</summary>
    /// <value>
    /// The default value is <see cref="LongPromptMode.Chunk"/>, as AUTOMATIC1111 and ComfyUI encode long prompts;
    /// <see cref="LongPromptMode.Truncate"/> gives diffusers' result. Prompts of up to 75 tokens are the same either way.
    /// </value>
    public LongPromptMode LongPrompts { get; init; } = LongPromptMode.Chunk;
}

/// <summary>How prompts longer than the text encoder's 75-token window are encoded.</summary>
public enum LongPromptMode
{
    /// <summary>diffusers: the tokens after the 75th are dropped (with a warning naming how many).</summary>
    Truncate,

    /// <summary>
    /// AUTOMATIC1111: the prompt is cut into chunks of 75 tokens (a chunk that would end within 20 tokens after a comma
    /// ends at the comma), each encoded on its own as start token, tokens, end-token padding and end token, and the
    /// chunks' 77 hidden states each are joined (154, 231, ... states). The prompt and the negative prompt are padded
    /// with empty chunks to the same count, as A1111's "pad prompt/negative prompt to be same length" does. A prompt
    /// of 75 tokens or fewer is encoded exactly as by <see cref="Truncate"/>.
    /// </summary>
    Chunk,
}

/// <summary>A snapshot of generation progress after each denoising step (one UNet evaluation).</summary>
/// <param name="Step">UNet evaluations done (1 after the first); never more than <paramref name="TotalSteps"/>, and the last report of a call equals it.</param>
/// <param name="TotalSteps">
/// UNet evaluations in this call (<see cref="StableDiffusionGenerator.ModelEvaluationCount(int)"/>): the steps asked for,
/// except that PNDM, as in diffusers, makes one more from 2 steps on (and 9 more with Runge-Kutta warm-up steps); image
/// to image runs only the last of them (<see cref="StableDiffusionGenerator.ModelEvaluationCount(int, double)"/>).
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
