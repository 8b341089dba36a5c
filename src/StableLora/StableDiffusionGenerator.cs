using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StableLora.AttentionProcessors;
using StableLora.Hub;
using StableLora.Lora;
using StableLora.Pipeline;
using StableLora.Schedulers;
using static TorchSharp.torch;

namespace StableLora;

/// <summary>
/// Text-to-image generation with Stable Diffusion 1.x/2.x, with or without LoRAs, as diffusers'
/// <c>StableDiffusionPipeline</c> computes it, and image to image (<see cref="GenerationOptions.InitImage"/>) as its
/// <c>StableDiffusionImg2ImgPipeline</c> does. Create one with <see cref="FromPretrained"/>; it holds the models until disposed.
/// </summary>
/// <example>
/// <code>
/// using var generator = StableDiffusionGenerator.FromPretrained("models/sd15")
///     .WithScheduler(SchedulerKind.DpmSolverMultistep)
///     .WithLora("output/lora_kohya.safetensors", 0.8)
///     .Build();
/// using var result = generator.Generate("a sketch of a lighthouse", new GenerationOptions { Steps = 20, Seed = 1234 });
/// result.SaveAll("images");
/// </code>
/// </example>
public sealed class StableDiffusionGenerator : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly IScheduler _scheduler;
    private readonly List<AttachedLora> _loras;
    private readonly LoraNetworkCache _callLoras;
    private readonly VaeTiling? _tiling;
    private readonly ILogger _logger;
    private readonly bool _ownsModel;
    private readonly object _gate = new();
    private string? _modelHash;

    internal StableDiffusionGenerator(StableDiffusionModel model, IScheduler scheduler, List<AttachedLora> loras, VaeTiling? tiling,
        ILogger logger, bool ownsModel, UnmatchedLoraKeys unmatchedLoraKeys)
    {
        _model = model;
        _scheduler = scheduler;
        _loras = loras;
        _callLoras = new LoraNetworkCache(new AdaptableModels(model.Unet, model.TextEncoder), new Layers.TensorSpec(model.Unet.Spec.Device, ScalarType.Float32),
            unmatchedLoraKeys, logger);
        _tiling = tiling;
        _logger = logger;
        _ownsModel = ownsModel;
    }

    /// <summary>The scheduler (sampler) this generator uses.</summary>
    public SchedulerKind Scheduler => _scheduler.Kind;

    /// <summary>The default image size of the model (512 for SD 1.5).</summary>
    public int DefaultImageSize => _model.DefaultImageSize;

    internal StableDiffusionModel Model => _model;

    /// <summary>Starts a builder for a base model: a diffusers folder, a single-file checkpoint (.safetensors/.ckpt), or a Hugging Face hub id (<c>org/name[@revision]</c>, from the local cache unless downloads are allowed with <see cref="StableDiffusionGeneratorBuilder.WithHubOptions"/>).</summary>
    /// <param name="model">The model folder, file or hub id.</param>
    public static StableDiffusionGeneratorBuilder FromPretrained(string model) => new(model);

    /// <summary>
    /// Generates images for <paramref name="prompt"/> (an empty prompt is allowed, as in diffusers), with the generator's
    /// LoRAs and this call's (<see cref="GenerationOptions.Loras"/>). Calls are serialised: a generator computes one call
    /// at a time, and concurrent calls wait for each other; each call's images equal those of a fresh generator built
    /// with the same LoRAs. Per-call LoRA files are read once and kept while unchanged (up to eight).
    /// </summary>
    /// <param name="prompt">What to draw; longer than 77 tokens is truncated with a logged warning.</param>
    /// <param name="options">Size, steps, guidance, seed, ...; null for the defaults.</param>
    /// <param name="progress">Receives a report after each denoising step.</param>
    /// <param name="cancellationToken">Checked before each step.</param>
    /// <exception cref="ArgumentNullException"><paramref name="prompt"/> is null.</exception>
    /// <exception cref="InvalidOptionsException">
    /// An option is invalid (size not a multiple of 8, steps below 1 or above the scheduler's num_train_timesteps, a
    /// guidance scale that is negative or not a number, ...); every problem is listed, naming the option and its value.
    /// </exception>
    public GenerationResult Generate(string prompt, GenerationOptions? options = null, IProgress<GenerationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options ??= new GenerationOptions();
        lock (_gate)
        {
            TextToImage.CheckOptions(_model, options);
            var callLoras = new List<AttachedLora>();
            foreach (var selection in options.Loras)
            {
                var (network, hash) = _callLoras.Get(selection.Path);
                var reference = new LoraReference(Path.GetFileNameWithoutExtension(selection.Path), selection.Weight, hash);
                callLoras.Add(new AttachedLora(network, reference, selection.Weight, selection.TextEncoderWeight ?? selection.Weight));
            }

            var active = _loras.Concat(callLoras).ToList();
            try
            {
                foreach (var lora in callLoras)
                {
                    if (_loras.Any(l => ReferenceEquals(l.Network, lora.Network)) || callLoras.Count(l => ReferenceEquals(l.Network, lora.Network)) > 1)
                        throw new InvalidOptionsException(nameof(options.Loras), lora.Reference.Name, "the same LoRA file is given twice; give it once with the weight wanted");
                    lora.Network.Attach();
                }

                // diffusers' cross_attention_kwargs["scale"] scales the UNet's and the text encoder's LoRA alike.
                foreach (var lora in active)
                    lora.Network.SetMultipliers(lora.UnetWeight * options.LoraScale, lora.TextEncoderWeight * options.LoraScale);

                var (images, seed, width, height) = TextToImage.Run(_model, _scheduler, prompt, options, _tiling, _logger, progress, cancellationToken);
                var parameters = new GenerationParameters
                {
                    Prompt = prompt,
                    NegativePrompt = options.NegativePrompt ?? "",
                    Steps = options.Steps,
                    Sampler = SamplerName(),
                    CfgScale = options.GuidanceScale,
                    Seed = seed,
                    Width = width,
                    Height = height,
                    ModelName = _model.Name,
                    ModelHash = ModelHash(),
                    Loras = active.Select(l => l.Reference with { Weight = l.UnetWeight * options.LoraScale }).ToList(),
                    Version = $"StableLora {typeof(StableDiffusionGenerator).Assembly.GetName().Version?.ToString(3)}",
                    ClipSkip = options.ClipSkip,
                    DenoisingStrength = options.InitImage is null ? null : options.Strength ?? GenerationOptions.DefaultStrength,
                };
                return new GenerationResult(images, seed, parameters);
            }
            finally
            {
                foreach (var lora in callLoras)
                    lora.Network.Detach();
            }
        }
    }

    /// <summary>
    /// The number of UNet evaluations (denoising loop steps, one progress report each) that <see cref="Generate"/> makes
    /// for <paramref name="steps"/>: the <see cref="GenerationProgress.TotalSteps"/> of its reports. It equals
    /// <paramref name="steps"/> except for PNDM, which, as in diffusers, evaluates the second timestep twice (PLMS:
    /// steps + 1 from 2 steps on) or runs 12 Runge-Kutta warm-up evaluations (skip_prk_steps false: steps + 9), and
    /// DPM-Solver++ with Karras sigmas, which drops timesteps that round to the same value.
    /// </summary>
    /// <param name="steps">The steps asked for (<see cref="GenerationOptions.Steps"/>).</param>
    /// <exception cref="InvalidOptionsException">The scheduler cannot run <paramref name="steps"/> steps.</exception>
    public int ModelEvaluationCount(int steps)
    {
        lock (_gate)
        {
            _scheduler.SetTimesteps(steps);
            return _scheduler.StepCount;
        }
    }

    /// <summary>
    /// The UNet evaluations that image to image (<see cref="GenerationOptions.InitImage"/>) makes for
    /// <paramref name="steps"/> and <paramref name="strength"/>: the schedule's evaluations from the one diffusers'
    /// <c>get_timesteps</c> starts at, t_start = steps - min(int(steps * strength), steps).
    /// </summary>
    /// <param name="steps">The steps asked for (<see cref="GenerationOptions.Steps"/>).</param>
    /// <param name="strength">The strength (<see cref="GenerationOptions.Strength"/>), 0 to 1.</param>
    /// <exception cref="InvalidOptionsException">The scheduler cannot run <paramref name="steps"/> steps, the strength is out of range, or it leaves no timestep.</exception>
    public int ModelEvaluationCount(int steps, double strength)
    {
        if (!(strength >= 0 && strength <= 1))
            throw new InvalidOptionsException(nameof(GenerationOptions.Strength), strength, "must be between 0 and 1 (diffusers' strength)");
        lock (_gate)
        {
            _scheduler.SetTimesteps(steps);
            return _scheduler.StepCount - ImageToImage.StartIndex(_scheduler, steps, strength);
        }
    }

    /// <summary>
    /// Checks <paramref name="options"/> as <see cref="Generate"/> does before it computes anything, without generating.
    /// </summary>
    /// <param name="options">The options to check.</param>
    /// <exception cref="InvalidOptionsException">An option is invalid; every problem is listed, naming the option and its value.</exception>
    public void CheckOptions(GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        TextToImage.CheckOptions(_model, options);
    }

    /// <summary>Runs <see cref="Generate"/> on a background thread.</summary>
    /// <param name="prompt">What to draw.</param>
    /// <param name="options">Size, steps, guidance, seed, ...; null for the defaults.</param>
    /// <param name="progress">Receives a report after each denoising step.</param>
    /// <param name="cancellationToken">Checked before each step.</param>
    public Task<GenerationResult> GenerateAsync(string prompt, GenerationOptions? options = null, IProgress<GenerationProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() => Generate(prompt, options, progress, cancellationToken), cancellationToken);

    /// <summary>
    /// Generates as <see cref="GenerateAsync"/> does, on a background thread, and yields the images one by one as
    /// <see cref="GeneratedImage"/>s (pixels, seed, parameters and PNG output; no tensor to dispose), in batch order with
    /// <see cref="GeneratedImage.Index"/> 0 to <see cref="GenerationOptions.ImageCount"/> - 1. All images of a batch come
    /// from one noise draw (diffusers' <c>num_images_per_prompt</c>), so the batch is computed as one call and its images
    /// are yielded when the batch has finished: a service streams them to its client one by one (for example each as
    /// <see cref="GeneratedImage.WritePng"/> into the response) without holding a result or a tensor. The images equal,
    /// bit for bit, those of <see cref="GenerateAsync"/> with the same options (the same seed); progress is reported as
    /// <see cref="Generate"/> reports it.
    /// </summary>
    /// <param name="prompt">What to draw.</param>
    /// <param name="options">Size, steps, guidance, seed, ...; null for the defaults.</param>
    /// <param name="progress">Receives a report after each denoising step.</param>
    /// <param name="cancellationToken">
    /// Checked before the call starts, before each step and before each image is yielded (with
    /// <c>WithCancellation</c>, that token is combined with this one).
    /// </param>
    /// <returns>The images, yielded after the batch has been computed. Nothing runs until the enumeration starts.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="prompt"/> is null (thrown when the enumeration starts).</exception>
    /// <exception cref="InvalidOptionsException">An option is invalid, as for <see cref="Generate"/>; nothing is computed.</exception>
    /// <exception cref="OperationCanceledException">
    /// The token was cancelled: before anything runs when it is cancelled already, else at the next step or image.
    /// </exception>
    public async IAsyncEnumerable<GeneratedImage> GenerateStreamAsync(string prompt, GenerationOptions? options = null,
        IProgress<GenerationProgress>? progress = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        cancellationToken.ThrowIfCancellationRequested();
        var images = await Task.Run(() =>
        {
            // The tensor is released here; the images are plain pixels that outlive it.
            using var result = Generate(prompt, options, progress, cancellationToken);
            return Enumerable.Range(0, result.Count).Select(result.GetImage).ToArray();
        }, cancellationToken).ConfigureAwait(false);
        foreach (var image in images)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return image;
        }
    }

    /// <summary>Releases the models (when this generator loaded them) and the LoRAs.</summary>
    public void Dispose()
    {
        foreach (var lora in _loras)
            lora.Network.Dispose();
        _callLoras.Dispose();

        _scheduler.Dispose();
        if (_ownsModel)
            _model.Dispose();
    }

    private string SamplerName()
    {
        string name = _scheduler.Kind switch
        {
            SchedulerKind.Pndm => "PLMS",
            SchedulerKind.Ddim => "DDIM",
            SchedulerKind.Ddpm => "DDPM",
            SchedulerKind.EulerDiscrete => "Euler",
            SchedulerKind.EulerAncestralDiscrete => "Euler a",
            _ => "DPM++ 2M",
        };
        bool karras = _scheduler.Config.UseKarrasSigmas == true && _scheduler.Kind is SchedulerKind.EulerDiscrete or SchedulerKind.DpmSolverMultistep;
        return karras ? name + " Karras" : name;
    }

    /// <summary>A1111's short model hash: the first 10 hex digits of the sha256 of the checkpoint file, or of a pipeline's UNet weights file (computed once).</summary>
    private string? ModelHash()
    {
        if (_modelHash is not null)
            return _modelHash;
        string unet = Path.Combine(_model.Source, "unet");
        if (!File.Exists(_model.Source) && !Directory.Exists(unet))
            return null;
        try
        {
            string file = File.Exists(_model.Source) ? _model.Source : WeightFiles.Locate(unet, WeightFiles.Diffusers, null, out _);
            using var stream = File.OpenRead(file);
            _modelHash = Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant()[..10];
        }
        catch (Exception e) when (e is IOException or InvalidModelFileException)
        {
            return null;
        }

        return _modelHash;
    }
}

/// <summary>Configures a <see cref="StableDiffusionGenerator"/>.</summary>
public sealed class StableDiffusionGeneratorBuilder
{
    private readonly string _model;
    private readonly List<(string? Path, LoraWeights? Weights, double UnetWeight, double? TextEncoderWeight)> _loras = new();
    private UnmatchedLoraKeys _unmatchedLoraKeys = UnmatchedLoraKeys.Error;
    private SchedulerKind? _scheduler;
    private bool _karras;
    private string _device = "auto";
    private ModelDType _dtype = ModelDType.Float32;
    private bool _vaeInFloat32 = true;
    private string? _variant;
    private HubOptions _hub = new();
    private SingleFileOptions _singleFile = new();
    private int? _tileSize;
    private bool _tiling;
    private int? _sliceSize;
    private bool _slicing;
    private ILogger _logger = NullLogger.Instance;
    private bool _built;

    internal StableDiffusionGeneratorBuilder(string model)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
    }

    /// <summary>The sampler; without it the model's own scheduler config decides (PNDM for SD 1.5).</summary>
    /// <param name="kind">The scheduler.</param>
    /// <param name="karrasSigmas">Use Karras sigmas (Euler and DPM-Solver++ only).</param>
    /// <exception cref="InvalidOptionsException">Karras sigmas asked for a scheduler that has none.</exception>
    public StableDiffusionGeneratorBuilder WithScheduler(SchedulerKind kind, bool karrasSigmas = false)
    {
        EnsureNotBuilt();
        if (!Enum.IsDefined(kind))
            throw new InvalidOptionsException(nameof(kind), kind, "unknown scheduler");
        if (karrasSigmas && kind is not (SchedulerKind.EulerDiscrete or SchedulerKind.DpmSolverMultistep))
            throw new InvalidOptionsException(nameof(karrasSigmas), true, $"Karras sigmas exist for the Euler and DPM-Solver++ schedulers only, not {SchedulerKindNames.CliName(kind)}");
        _scheduler = kind;
        _karras = karrasSigmas;
        return this;
    }

    /// <summary>The device: "auto", "cpu", "cuda" or "cuda:N".</summary>
    /// <param name="device">The device name.</param>
    public StableDiffusionGeneratorBuilder WithDevice(string device)
    {
        EnsureNotBuilt();
        _device = device ?? throw new ArgumentNullException(nameof(device));
        if (!DeviceSpec.TryParse(device, out _))
            throw new InvalidOptionsException("Device", device, "expected auto, cpu, cuda or cuda:N");
        return this;
    }

    /// <summary>The precision of the models.</summary>
    /// <param name="dtype">Float32 (exact), Float16 or BFloat16.</param>
    /// <param name="vaeInFloat32">Keep the VAE in float32 under Float16 (SD's VAE overflows in fp16).</param>
    public StableDiffusionGeneratorBuilder WithDType(ModelDType dtype, bool vaeInFloat32 = true)
    {
        EnsureNotBuilt();
        if (!Enum.IsDefined(dtype))
            throw new InvalidOptionsException("DType", dtype, "expected Float32, Float16 or BFloat16");
        _dtype = dtype;
        _vaeInFloat32 = vaeInFloat32;
        return this;
    }

    /// <summary>Prefer a weight-file variant (e.g. "fp16": <c>diffusion_pytorch_model.fp16.safetensors</c>).</summary>
    /// <param name="variant">The variant name.</param>
    public StableDiffusionGeneratorBuilder WithVariant(string variant)
    {
        EnsureNotBuilt();
        if (string.IsNullOrWhiteSpace(variant))
            throw new InvalidOptionsException("Variant", variant, "a variant name such as fp16 is needed");
        _variant = variant;
        return this;
    }

    /// <summary>
    /// Adds a LoRA file (any supported format: kohya, LyCORIS LoHa/LoKr, PEFT, diffusers' lora_weights.pt) with its weights; may be
    /// called several times, each LoRA with its own weights (ComfyUI's <c>strength_model</c> / <c>strength_clip</c>).
    /// </summary>
    /// <param name="path">The LoRA file.</param>
    /// <param name="weight">The UNet's weight (1 = as trained).</param>
    /// <param name="textEncoderWeight">The text encoder's weight; null: the same as <paramref name="weight"/>.</param>
    public StableDiffusionGeneratorBuilder WithLora(string path, double weight = 1.0, double? textEncoderWeight = null)
    {
        EnsureNotBuilt();
        CheckLoraWeights(weight, textEncoderWeight);
        _loras.Add((path ?? throw new ArgumentNullException(nameof(path)), null, weight, textEncoderWeight));
        return this;
    }

    /// <summary>Adds a LoRA already in memory with its weights.</summary>
    /// <param name="lora">The LoRA (not disposed by the generator).</param>
    /// <param name="weight">The UNet's weight.</param>
    /// <param name="textEncoderWeight">The text encoder's weight; null: the same as <paramref name="weight"/>.</param>
    public StableDiffusionGeneratorBuilder WithLora(LoraWeights lora, double weight = 1.0, double? textEncoderWeight = null)
    {
        EnsureNotBuilt();
        CheckLoraWeights(weight, textEncoderWeight);
        _loras.Add((null, lora ?? throw new ArgumentNullException(nameof(lora)), weight, textEncoderWeight));
        return this;
    }

    /// <summary>
    /// Skip a LoRA's modules that match no layer of the model, with one warning that names and counts them, instead of
    /// refusing the file (ComfyUI loads such files and logs each key as "lora key not loaded").
    /// </summary>
    public StableDiffusionGeneratorBuilder SkipUnmatchedLoraKeys()
    {
        EnsureNotBuilt();
        _unmatchedLoraKeys = UnmatchedLoraKeys.Skip;
        return this;
    }

    /// <summary>Decode (and encode) with the VAE in overlapping tiles (diffusers' <c>enable_vae_tiling</c>).</summary>
    /// <param name="tileSize">Tile side in pixels; null: the VAE's sample_size (512 for SD).</param>
    public StableDiffusionGeneratorBuilder WithVaeTiling(int? tileSize = null)
    {
        EnsureNotBuilt();
        if (tileSize is { } tile && (tile < 8 || tile % 8 != 0))
            throw new InvalidOptionsException(nameof(tileSize), tileSize, "must be a positive multiple of 8 (pixels)");
        _tiling = true;
        _tileSize = tileSize;
        return this;
    }

    /// <summary>Compute attention in slices (diffusers' <c>enable_attention_slicing</c>) to save memory.</summary>
    /// <param name="sliceSize">(batch x head) rows per slice; null: half the heads ("auto").</param>
    public StableDiffusionGeneratorBuilder WithAttentionSlicing(int? sliceSize = null)
    {
        EnsureNotBuilt();
        if (sliceSize < 1)
            throw new InvalidOptionsException(nameof(sliceSize), sliceSize, "must be at least 1");
        _slicing = true;
        _sliceSize = sliceSize;
        return this;
    }

    /// <summary>How a hub id is resolved: the cache folder, whether missing files may be downloaded, offline mode, the token.</summary>
    /// <param name="options">The hub options (unset values come from the HF_* environment variables).</param>
    public StableDiffusionGeneratorBuilder WithHubOptions(HubOptions options)
    {
        EnsureNotBuilt();
        _hub = options ?? throw new ArgumentNullException(nameof(options));
        return this;
    }

    /// <summary>How a single-file checkpoint is read: a config folder or original LDM yaml, EMA weights.</summary>
    /// <param name="options">The single-file options.</param>
    public StableDiffusionGeneratorBuilder WithSingleFileOptions(SingleFileOptions options)
    {
        EnsureNotBuilt();
        _singleFile = options ?? throw new ArgumentNullException(nameof(options));
        return this;
    }

    /// <summary>Where loading and warnings (truncated prompts) are logged.</summary>
    /// <param name="logger">The logger.</param>
    public StableDiffusionGeneratorBuilder WithLogger(ILogger logger)
    {
        EnsureNotBuilt();
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        return this;
    }

    /// <summary>Loads the model and LoRAs.</summary>
    /// <exception cref="InvalidModelFileException">The model or a LoRA cannot be loaded or does not fit.</exception>
    /// <exception cref="InvalidOperationException">This builder has already built a generator (builders are single-use).</exception>
    public StableDiffusionGenerator Build()
    {
        StartBuild();
        var location = ModelLocation.Resolve(_model, HubSettings.Resolve(_hub), _variant, _logger);
        return Load(location, CancellationToken.None);
    }

    /// <summary>
    /// Loads the model and LoRAs without blocking the caller: a hub id is resolved (and, when allowed, downloaded)
    /// asynchronously, the weights are read on the thread pool. A token already cancelled throws before anything is read;
    /// one cancelled meanwhile stops the download or the loading between components.
    /// </summary>
    /// <param name="cancellationToken">Cancels resolving, downloading and loading.</param>
    /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
    /// <exception cref="InvalidModelFileException">The model or a LoRA cannot be loaded or does not fit.</exception>
    /// <exception cref="InvalidOperationException">This builder has already built a generator (builders are single-use).</exception>
    public async Task<StableDiffusionGenerator> BuildAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        StartBuild();
        var location = await ModelLocation.ResolveAsync(_model, HubSettings.Resolve(_hub), _variant, _logger, cancellationToken).ConfigureAwait(false);
        return await Task.Run(() => Load(location, cancellationToken), cancellationToken).ConfigureAwait(false);
    }

    private StableDiffusionGenerator Load(ResolvedModel location, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var device = DeviceSpec.ResolveForCompute(_device, _logger);
        var (dtype, vaeDtype) = ComponentPrecision.Resolve(_dtype, _vaeInFloat32, device, "DType");
        var model = StableDiffusionModel.Load(location, new ModelLoadSettings(device, dtype, vaeDtype, dtype, _variant, _logger), _singleFile);
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            return Assemble(model, ownsModel: true);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>A generator over a model that is already loaded (the trainer's validation images).</summary>
    internal StableDiffusionGenerator BuildOver(StableDiffusionModel model)
    {
        StartBuild();
        return Assemble(model, ownsModel: false);
    }

    private void EnsureNotBuilt()
    {
        if (_built)
            throw new InvalidOperationException("this builder has already built a generator; start a new one");
    }

    /// <summary>Marks the builder used (every setting was checked when it was set).</summary>
    private void StartBuild()
    {
        EnsureNotBuilt();
        _built = true;
    }

    private static void CheckLoraWeights(double weight, double? textEncoderWeight)
    {
        if (!double.IsFinite(weight))
            throw new InvalidOptionsException(nameof(weight), weight, "a LoRA weight must be a finite number");
        if (textEncoderWeight is { } te && !double.IsFinite(te))
            throw new InvalidOptionsException(nameof(textEncoderWeight), te, "a LoRA weight must be a finite number");
    }

    private StableDiffusionGenerator Assemble(StableDiffusionModel model, bool ownsModel)
    {
        var config = model.SchedulerConfig with { UseKarrasSigmas = _karras ? true : model.SchedulerConfig.UseKarrasSigmas };
        var scheduler = _scheduler is { } kind ? SchedulerFactory.Create(kind, config) : SchedulerFactory.Create(config);
        if (_slicing)
        {
            foreach (var attention in model.Unet.modules().OfType<AttentionProcessors.Attention>())
                attention.SliceSize = _sliceSize ?? Math.Max(1, (int)attention.Shape.Heads / 2);
        }

        var loras = new List<AttachedLora>();
        try
        {
            var models = new AdaptableModels(model.Unet, model.TextEncoder);
            foreach (var (path, weights, unetWeight, textEncoderWeight) in _loras)
            {
                if (!double.IsFinite(unetWeight) || textEncoderWeight is { } te && !double.IsFinite(te))
                    throw new InvalidOptionsException("lora weight", path, "a LoRA's weights must be finite numbers");
                var lora = weights ?? LoraWeights.Load(path!);
                try
                {
                    var network = lora.CreateNetwork(models, _unmatchedLoraKeys, _logger, new Layers.TensorSpec(model.Unet.Spec.Device, ScalarType.Float32));
                    network.SetMultipliers(unetWeight, textEncoderWeight ?? unetWeight);
                    network.Attach();
                    string name = path is null ? "lora" : Path.GetFileNameWithoutExtension(path);
                    loras.Add(new AttachedLora(network, new LoraReference(name, unetWeight, path is null ? null : LoraFileHash.Compute(path)), unetWeight, textEncoderWeight ?? unetWeight));
                }
                finally
                {
                    if (weights is null)
                        lora.Dispose();
                }
            }
        }
        catch
        {
            foreach (var lora in loras)
                lora.Network.Dispose();
            scheduler.Dispose();
            throw;
        }

        return new StableDiffusionGenerator(model, scheduler, loras, _tiling ? new VaeTiling(_tileSize) : null, _logger, ownsModel, _unmatchedLoraKeys);
    }
}

/// <summary>A LoRA attached to a generator's models, with the weights it was added with.</summary>
internal sealed record AttachedLora(LoraNetwork Network, LoraReference Reference, double UnetWeight, double TextEncoderWeight);
