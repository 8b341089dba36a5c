using System.Globalization;
using StableLora.Data;

namespace StableLora;

/// <summary>
/// Every setting of a LoRA training run, immutable. Built by <see cref="LoraTrainingBuilder"/>, which checks it;
/// defaults are those of diffusers' LoRA training example (train_text_to_image_lora.py) that StableLora started from.
/// </summary>
public sealed record LoraTrainingOptions
{
    /// <summary>The base model: a diffusers folder, a single-file checkpoint, or a Hugging Face hub id (runwayml/stable-diffusion-v1-5 by default).</summary>
    /// <value>The default value is "runwayml/stable-diffusion-v1-5".</value>
    public string Model { get; init; } = Defaults.Model;

    /// <summary>How <see cref="Model"/> is read when it is a single-file checkpoint (config folder or LDM yaml, EMA weights).</summary>
    public SingleFileOptions SingleFile { get; init; } = new();

    /// <summary>The folder of training images (ignored when a dataset object is given to the builder).</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Where checkpoints and the final LoRA go.</summary>
    /// <value>The default value is "output".</value>
    public string OutputDirectory { get; init; } = Defaults.OutputDirectory;

    /// <summary>"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".</summary>
    /// <value>The default value is "auto".</value>
    public string Device { get; init; } = Defaults.Device;

    /// <summary>The training image size in pixels (square); a multiple of 8.</summary>
    /// <value>The default value is 512.</value>
    public int Resolution { get; init; } = Defaults.Resolution;

    /// <summary>Images per micro-batch.</summary>
    /// <value>The default value is 1.</value>
    public int BatchSize { get; init; } = Defaults.BatchSize;

    /// <summary>The peak learning rate of the optimizer (for Prodigy a multiplier of its estimated step size, about 1.0; ignored by Adafactor with relative_step).</summary>
    /// <value>The default value is 1e-4.</value>
    public double LearningRate { get; init; } = Defaults.LearningRate;

    /// <summary>The optimizer of the LoRA parameters (sd-scripts' <c>optimizer_type</c>).</summary>
    /// <value>The default value is <see cref="StableLora.OptimizerType.AdamW"/>.</value>
    public OptimizerType Optimizer { get; init; } = OptimizerType.AdamW;

    /// <summary>
    /// The optimizer's arguments (sd-scripts' <c>optimizer_args</c>): key to value, with the reference implementations'
    /// keyword names and Python-style values (<c>betas</c> = <c>0.9,0.99</c>, <c>decouple</c> = <c>True</c>); checked against
    /// <see cref="Optimizer"/>'s known keys. Empty: its defaults.
    /// </summary>
    public IReadOnlyDictionary<string, string> OptimizerArguments { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// Keep an exponential moving average of the LoRA weights with this decay (diffusers' <c>EMAModel</c>, as OneTrainer
    /// and SimpleTuner offer it; e.g. 0.999) and write it beside the trained weights as <c>lora_kohya-ema.safetensors</c>
    /// (and <c>lora_weights-ema.pt</c>); null: no EMA.
    /// </summary>
    public double? LoraEmaDecay { get; init; }

    /// <summary>Update the EMA every this many optimizer steps (OneTrainer's <c>ema_update_step_interval</c>).</summary>
    /// <value>The default value is 1.</value>
    public int LoraEmaUpdateEvery { get; init; } = 1;

    /// <summary>
    /// diffusers' <c>use_ema_warmup</c>: the decay grows as 1 - (1 + step)^(-2/3) instead of (1 + step) / (10 + step),
    /// up to <see cref="LoraEmaDecay"/>.
    /// </summary>
    public bool LoraEmaWarmup { get; init; }

    /// <summary>Write only the EMA files (<c>-ema</c>), not the trained weights' (which checkpoints still hold).</summary>
    public bool LoraEmaOnly { get; init; }

    /// <summary>Optimizer steps to train for.</summary>
    /// <value>The default value is 1000.</value>
    public int MaxSteps { get; init; } = Defaults.MaxSteps;

    /// <summary>
    /// Linear warm-up steps of the learning-rate schedule (ignored by <see cref="StableLora.LearningRateSchedule.Constant"/>,
    /// and when <see cref="WarmupRatio"/> is given). Null: <see cref="Defaults.WarmupSteps"/>, shortened to
    /// <see cref="MaxSteps"/> for a shorter run (logged); an explicit value above <see cref="MaxSteps"/> is an error.
    /// </summary>
    /// <value>The default value is null (100 steps, or the run's length when it is shorter).</value>
    public int? WarmupSteps { get; init; }

    /// <summary>The warm-up steps a run takes from <see cref="WarmupSteps"/>: the value given, or the default shortened to the run.</summary>
    internal int EffectiveWarmupSteps => WarmupSteps ?? Math.Min(Defaults.WarmupSteps, MaxSteps);

    /// <summary>
    /// Warm-up as a fraction of <see cref="MaxSteps"/>, in [0, 1]: int(ratio x MaxSteps) steps, as kohya's sd-scripts turns
    /// an <c>lr_warmup_steps</c> below 1 into steps. Replaces <see cref="WarmupSteps"/> when given; null: WarmupSteps.
    /// </summary>
    public double? WarmupRatio { get; init; }

    /// <summary>The learning-rate schedule (diffusers' <c>lr_scheduler</c>); every parameter group's peak is multiplied by it.</summary>
    /// <value>The default value is <see cref="StableLora.LearningRateSchedule.Cosine"/> (diffusers' attention-processor LoRA).</value>
    public LearningRateSchedule LearningRateSchedule { get; init; } = LearningRateSchedule.Cosine;

    /// <summary>The number of hard restarts of <see cref="StableLora.LearningRateSchedule.CosineWithRestarts"/> (diffusers' <c>num_cycles</c>); null: 1. Only for that schedule.</summary>
    public int? LearningRateCycles { get; init; }

    /// <summary>The power of <see cref="StableLora.LearningRateSchedule.Polynomial"/> (diffusers' <c>power</c>); null: 1 (linear decay). Only for that schedule.</summary>
    public double? LearningRatePower { get; init; }

    /// <summary>
    /// The learning rate <see cref="StableLora.LearningRateSchedule.Polynomial"/> ends at (diffusers' <c>lr_end</c>), relative to
    /// <see cref="LearningRate"/>: a group whose peak differs ends at its peak x LearningRateEnd / LearningRate. Null: 1e-7
    /// (diffusers' default). Must be below <see cref="LearningRate"/>. Only for that schedule.
    /// </summary>
    public double? LearningRateEnd { get; init; }

    /// <summary>The LoRA rank.</summary>
    /// <value>The default value is 4.</value>
    public int Rank { get; init; } = Defaults.Rank;

    /// <summary>The LoRA alpha (each layer adds alpha / rank x its output); null means alpha = rank (scale 1), as diffusers' attention-processor LoRA.</summary>
    public double? Alpha { get; init; }

    /// <summary>Which attention projections get LoRA layers.</summary>
    /// <value>The default value is <see cref="LoraTargets.All"/> (to_q, to_k, to_v, to_out.0, as diffusers' attention-processor LoRA).</value>
    public LoraTargets Targets { get; init; } = LoraTargets.All;

    /// <summary>Which attentions get LoRA layers.</summary>
    /// <value>The default value is <see cref="LoraAttentionKinds.All"/>.</value>
    public LoraAttentionKinds AttentionKinds { get; init; } = LoraAttentionKinds.All;

    /// <summary>Dropout on the LoRA layers' input while training.</summary>
    /// <value>The default value is 0.</value>
    public double LoraDropout { get; init; }

    /// <summary>Which UNet layers the LoRA adapts (when <see cref="TargetPatterns"/> is empty).</summary>
    /// <value>The default value is <see cref="LoraPreset.Attention"/> (diffusers' attention-processor LoRA).</value>
    public LoraPreset Preset { get; init; } = LoraPreset.Attention;

    /// <summary>
    /// UNet module-path globs that choose the adapted layers instead of <see cref="Preset"/>, e.g.
    /// <c>*.attn2.to_k</c> or <c>up_blocks.*.attentions.*</c>: <c>*</c> matches any run of characters (dots included),
    /// <c>?</c> one character; every Linear and Conv2d whose path (diffusers' state-dict name without <c>.weight</c>)
    /// matches one is adapted. Empty: the preset decides.
    /// </summary>
    public IReadOnlyList<string> TargetPatterns { get; init; } = Array.Empty<string>();

    /// <summary>
    /// LoCon: also adapt the convolutions of the UNet's ResnetBlock2D, Downsample2D and Upsample2D blocks (kohya's
    /// <c>conv_dim</c>); 3x3 convolutions get this rank, their 1x1 <c>conv_shortcut</c> and <c>time_emb_proj</c> the
    /// network <see cref="Rank"/>. Null: no convolutions.
    /// </summary>
    public int? ConvRank { get; init; }

    /// <summary>kohya's <c>conv_alpha</c>; null: the conv rank (scale 1). kohya's own default is 1.</summary>
    public double? ConvAlpha { get; init; }

    /// <summary>Also train LoRA on the text encoder's attention and MLP layers (72 modules on SD 1.5), as kohya does by default.</summary>
    public bool TrainTextEncoder { get; init; }

    /// <summary>The text encoder's LoRA rank; null: <see cref="Rank"/>.</summary>
    public int? TextEncoderRank { get; init; }

    /// <summary>The text encoder's LoRA alpha; null: <see cref="Alpha"/> when <see cref="TextEncoderRank"/> is null too (kohya uses one rank and alpha for both), else its rank.</summary>
    public double? TextEncoderAlpha { get; init; }

    /// <summary>The text encoder LoRA's peak learning rate (kohya's <c>text_encoder_lr</c>); null: <see cref="LearningRate"/>.</summary>
    public double? TextEncoderLearningRate { get; init; }

    /// <summary>The UNet LoRA's peak learning rate (kohya's <c>unet_lr</c>); null: <see cref="LearningRate"/>.</summary>
    public double? UnetLearningRate { get; init; }

    /// <summary>Dropout on each LoRA's down-projection output while training (kohya's <c>network_dropout</c>).</summary>
    public double NetworkDropout { get; init; }

    /// <summary>Drops whole ranks per sample while training, scaling the rest up (kohya's <c>rank_dropout</c>).</summary>
    public double RankDropout { get; init; }

    /// <summary>Skips a whole LoRA module for a step with this probability while training (kohya's <c>module_dropout</c>).</summary>
    public double ModuleDropout { get; init; }

    /// <summary>Write a checkpoint every this many steps (0: only at the end).</summary>
    /// <value>The default value is 500.</value>
    public int CheckpointEvery { get; init; } = Defaults.CheckpointEvery;

    /// <summary>Keep only the newest this many checkpoints (null: keep all).</summary>
    public int? KeepLastCheckpoints { get; init; }

    /// <summary>The precision of the frozen models.</summary>
    /// <value>The default value is <see cref="StableLora.MixedPrecision.No"/>.</value>
    public MixedPrecision MixedPrecision { get; init; } = MixedPrecision.No;

    /// <summary>Keep the VAE in float32 under fp16 mixed precision (SD's VAE overflows in fp16).</summary>
    /// <value>The default value is true.</value>
    public bool VaeInFloat32 { get; init; } = true;

    /// <summary>The caption of every image (one caption for every image).</summary>
    /// <value>The default value is "a sketch".</value>
    public string Caption { get; init; } = Defaults.Caption;

    /// <summary>
    /// sd-scripts' <c>max_token_length</c>: how many caption tokens the text encoder sees, 75 (one 77-token window, the
    /// default), 150 or 225. Above 75 the caption is cut into 75-token chunks, each encoded on its own with start and end
    /// tokens, and the hidden states are joined as sd-scripts does (152 or 227 states).
    /// </summary>
    /// <value>The default value is 75.</value>
    public int MaxTokenLength { get; init; } = Defaults.MaxTokenLength;

    /// <summary>
    /// sd-scripts' <c>clip_skip</c> (AUTOMATIC1111's "Clip skip"): 1 trains on the text encoder's last layer (the default),
    /// 2 on the penultimate layer's output through the final LayerNorm, and so on up to the text encoder's layer count
    /// (checked when the model is loaded). diffusers' <c>clip_skip</c> counts skipped layers: its 1 is this 2.
    /// </summary>
    /// <value>The default value is 1 (no skip).</value>
    public int ClipSkip { get; init; } = 1;

    /// <summary>Use <c>image.txt</c> beside <c>image.png</c> as that image's caption when present (kohya convention).</summary>
    public bool UseCaptionFiles { get; init; }

    /// <summary>Look for images in sub-folders of the data directory too.</summary>
    public bool RecursiveDataset { get; init; }

    /// <summary>Crop training images at a random position (else the centre).</summary>
    public bool RandomCrop { get; init; }

    /// <summary>Mirror training images horizontally at random.</summary>
    public bool RandomFlip { get; init; }

    // Datasets (issue 14: buckets, captions, repeats and epochs), sd-scripts' names in the docs.

    /// <summary>Train at several aspect ratios: each image goes to the bucket of the closest aspect ratio, and every batch comes from one bucket (sd-scripts' <c>enable_bucket</c>).</summary>
    public bool EnableBucket { get; init; }

    /// <summary>The smallest bucket side (sd-scripts' <c>min_bucket_reso</c>); null: 256, or half the resolution when that is smaller.</summary>
    public int? MinBucketReso { get; init; }

    /// <summary>The largest bucket side (sd-scripts' <c>max_bucket_reso</c>); null: 1024, or the resolution when that is larger.</summary>
    public int? MaxBucketReso { get; init; }

    /// <summary>The step between bucket sides in pixels, a multiple of 8 (sd-scripts' <c>bucket_reso_steps</c>).</summary>
    /// <value>The default value is 64.</value>
    public int BucketResoSteps { get; init; } = 64;

    /// <summary>Make buckets from the images' own sizes and never enlarge an image (sd-scripts' <c>bucket_no_upscale</c>).</summary>
    public bool BucketNoUpscale { get; init; }

    /// <summary>The caption files' extension (sd-scripts' <c>caption_extension</c>).</summary>
    /// <value>The default value is ".txt".</value>
    public string CaptionExtension { get; init; } = ".txt";

    /// <summary>Shuffle each caption's comma-separated tags (sd-scripts' <c>shuffle_caption</c>).</summary>
    public bool ShuffleCaption { get; init; }

    /// <summary>Leading tags kept in place when shuffling or dropping tags (sd-scripts' <c>keep_tokens</c>).</summary>
    public int KeepTokens { get; init; }

    /// <summary>Tags before it stay in place, and those after a second one stay at the end (sd-scripts' <c>keep_tokens_separator</c>); null: none.</summary>
    public string? KeepTokensSeparator { get; init; }

    /// <summary>Probability of training an image with the empty caption (sd-scripts' <c>caption_dropout_rate</c>).</summary>
    public double CaptionDropoutRate { get; init; }

    /// <summary>Probability of leaving out each movable tag (sd-scripts' <c>caption_tag_dropout_rate</c>).</summary>
    public double CaptionTagDropoutRate { get; init; }

    /// <summary>Train every n-th epoch with empty captions (sd-scripts' <c>caption_dropout_every_n_epochs</c>); 0: never.</summary>
    public int CaptionDropoutEveryNEpochs { get; init; }

    /// <summary>Put before every caption, with a space (sd-scripts' <c>caption_prefix</c>).</summary>
    public string? CaptionPrefix { get; init; }

    /// <summary>Put after every caption, with a space (sd-scripts' <c>caption_suffix</c>).</summary>
    public string? CaptionSuffix { get; init; }

    /// <summary>Train this many epochs instead of <see cref="MaxSteps"/> (sd-scripts' <c>max_train_epochs</c>: steps = epochs x ceil(batches per epoch / accumulation)); null: train MaxSteps.</summary>
    public int? MaxEpochs { get; init; }

    /// <summary>
    /// The dataset as separate folders, each with its repeats and class caption (sd-scripts' dataset config subsets;
    /// <see cref="LoraTrainingBuilder.WithDatasetConfig"/> reads them from a file). When it holds training folders, they
    /// are the dataset instead of <see cref="DataDirectory"/>; its regularisation folders act as <see cref="RegularizationDirectory"/>.
    /// </summary>
    public IReadOnlyList<DatasetSubset> Subsets { get; init; } = Array.Empty<DatasetSubset>();

    /// <summary>
    /// A folder of regularisation (class) images for DreamBooth-style prior preservation (sd-scripts' <c>reg_data_dir</c>):
    /// laid out as <c>&lt;repeats&gt;_&lt;class&gt;</c> sub-folders or a plain folder of images. They are mixed into the
    /// epochs as sd-scripts does (repeated until they match the training images' count) and their loss is weighted by
    /// <see cref="PriorLossWeight"/>; null: none.
    /// </summary>
    public string? RegularizationDirectory { get; init; }

    /// <summary>The loss weight of regularisation images (sd-scripts' <c>prior_loss_weight</c>; training images weigh 1).</summary>
    public double PriorLossWeight { get; init; } = 1.0;

    /// <summary>
    /// Weight the loss per pixel by a mask (sd-scripts' <c>masked_loss</c>): from each image's alpha channel (sd-scripts'
    /// <c>alpha_mask</c>; images without one weigh 1 everywhere), or from <see cref="MaskDirectory"/>. The mask is resized,
    /// cropped and flipped with its image and averaged down to the latents' size.
    /// </summary>
    public bool MaskedLoss { get; init; }

    /// <summary>
    /// With <see cref="MaskedLoss"/>: a folder holding one mask per training image, with the image's file name (any
    /// image extension) and size; the red channel is the weight (0 = ignored, 255 = full), as sd-scripts reads its
    /// conditioning images. Null: the images' alpha channels.
    /// </summary>
    public string? MaskDirectory { get; init; }

    /// <summary>Also save a checkpoint at the end of every n-th epoch (sd-scripts' <c>save_every_n_epochs</c>); 0: off.</summary>
    public int SaveEveryNEpochs { get; init; }

    /// <summary>The bucket sides in use: (min, max).</summary>
    internal (int Min, int Max) BucketSides() =>
        (MinBucketReso ?? Math.Max(BucketResoSteps, Math.Min(256, Resolution / 2 / BucketResoSteps * BucketResoSteps)), MaxBucketReso ?? Math.Max(1024, Resolution));

    /// <summary>Skip images that cannot be read (with a warning naming each) instead of failing.</summary>
    public bool SkipUnreadableImages { get; init; }

    /// <summary>Encode every image to latents once and reuse them in this run (not with random crops; a flipped image is its own entry).</summary>
    public bool CacheLatents { get; init; }

    /// <summary>
    /// Cache the latents on disk too (sd-scripts' <c>cache_latents_to_disk</c>), so that later runs skip the VAE: one file
    /// per image (and flip) beside the image (<c>a.png.latents.safetensors</c>) or in <see cref="LatentCacheDirectory"/>,
    /// rebuilt when the image, its size after resizing and cropping, or the VAE changes. Not with random crops.
    /// </summary>
    public bool CacheLatentsToDisk { get; init; }

    /// <summary>With <see cref="CacheLatentsToDisk"/>: the folder for the cache files; null: beside each image.</summary>
    public string? LatentCacheDirectory { get; init; }

    /// <summary>
    /// Recompute the UNet's block activations during backward instead of keeping them (diffusers'
    /// <c>--gradient_checkpointing</c>): much less memory for roughly one more UNet forward per step. Results are the
    /// same up to float rounding.
    /// </summary>
    public bool GradientCheckpointing { get; init; }

    /// <summary>The seed of every random draw (data order, noise, timesteps, LoRA initialisation).</summary>
    /// <value>The default value is 42.</value>
    public ulong Seed { get; init; } = Defaults.Seed;

    /// <summary>Micro-batches whose gradients are summed before each optimizer step.</summary>
    /// <value>The default value is 1.</value>
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Clip the total gradient norm to this (0: no clipping).</summary>
    /// <value>The default value is 1.0 (diffusers' training scripts).</value>
    public double MaxGradNorm { get; init; } = Defaults.MaxGradNorm;

    /// <summary>kohya's noise offset: adds offset x N(0,1) per (image, channel) to the noise.</summary>
    public double NoiseOffset { get; init; }

    /// <summary>Min-SNR-gamma loss weighting (Hang et al. 2023); null: the plain MSE.</summary>
    public double? MinSnrGamma { get; init; }

    /// <summary>The per-element loss (sd-scripts' <c>loss_type</c>).</summary>
    /// <value>The default value is <see cref="StableLora.LossType.L2"/> (the plain MSE).</value>
    public LossType LossType { get; init; } = LossType.L2;

    /// <summary>sd-scripts' <c>huber_c</c> for <see cref="StableLora.LossType.Huber"/> and <see cref="StableLora.LossType.SmoothL1"/>; null: 0.1 (sd-scripts' default). Only for those losses.</summary>
    public double? HuberC { get; init; }

    /// <summary>How the Huber threshold depends on the timestep (sd-scripts' <c>huber_schedule</c>); null: <see cref="StableLora.HuberSchedule.Snr"/> (sd-scripts' default). Only for the Huber and smooth-L1 losses.</summary>
    public HuberSchedule? HuberSchedule { get; init; }

    /// <summary>
    /// sd-scripts' <c>debiased_estimation_loss</c>: each sample's loss x 1 / sqrt(SNR_t) (1 / (SNR_t + 1) for v-prediction
    /// models), SNR clamped at 1000.
    /// </summary>
    public bool DebiasedEstimation { get; init; }

    /// <summary>
    /// sd-scripts' <c>ip_noise_gamma</c> (input perturbation, Ning et al. 2023): the UNet sees latents noised with
    /// noise + gamma x N(0, 1) while the target stays the plain noise; null: off. 0.1 is the usual value.
    /// </summary>
    public double? IpNoiseGamma { get; init; }

    /// <summary>
    /// sd-scripts' <c>zero_terminal_snr</c> (Lin et al. 2023): rescale the noise schedule's betas so that the last timestep
    /// is pure noise. Only for v-prediction models (checked when the model is loaded).
    /// </summary>
    public bool ZeroTerminalSnr { get; init; }

    /// <summary>sd-scripts' <c>v_pred_like_loss</c>: adds this x each sample's loss / (SNR_t / (SNR_t + 1)) (SNR clamped at 1000); null: off.</summary>
    public double? VPredLikeLoss { get; init; }

    /// <summary>A prompt to render with the current LoRA every <see cref="ValidationEvery"/> steps (null: none).</summary>
    public string? ValidationPrompt { get; init; }

    /// <summary>Steps between validation renders (0: only at checkpoints).</summary>
    public int ValidationEvery { get; init; }

    /// <summary>Write TensorBoard scalars (loss, learning rate) under this folder; null: none.</summary>
    public string? TensorBoardDirectory { get; init; }

    /// <summary>Resume from this checkpoint folder, or "latest" for the newest in the output directory; null: start fresh.</summary>
    public string? ResumeFrom { get; init; }

    /// <summary>What to do when a step's loss is NaN or infinite.</summary>
    /// <value>The default value is <see cref="NonFiniteLossPolicy.SkipStep"/>.</value>
    public NonFiniteLossPolicy OnNonFiniteLoss { get; init; } = NonFiniteLossPolicy.SkipStep;

    /// <summary>
    /// With <see cref="NonFiniteLossPolicy.SkipStep"/>, training stops with <see cref="TrainingFailedException"/> after
    /// this many skipped steps in a row (non-finite loss or gradients); 0: never. fp16 loss-scale overflows at a scale
    /// above 1 (the scale searching down from 65536 at the start of a run) are normal and do not count.
    /// </summary>
    /// <value>The default value is <see cref="Defaults.MaxConsecutiveSkippedSteps"/>.</value>
    public int MaxConsecutiveSkippedSteps { get; init; } = Defaults.MaxConsecutiveSkippedSteps;

    /// <summary>The shape of the network these options train.</summary>
    internal Lora.LoraNetworkOptions NetworkOptions() => new()
    {
        Preset = Preset,
        TargetPatterns = TargetPatterns,
        Rank = Rank,
        Alpha = Alpha,
        Targets = Targets,
        AttentionKinds = AttentionKinds,
        ConvRank = ConvRank,
        ConvAlpha = ConvAlpha,
        TextEncoder = TrainTextEncoder,
        TextEncoderRank = TextEncoderRank,
        TextEncoderAlpha = TextEncoderAlpha,
        InputDropout = LoraDropout,
        NetworkDropout = NetworkDropout,
        RankDropout = RankDropout,
        ModuleDropout = ModuleDropout,
    };

    /// <summary>The defaults, for documentation and the CLI.</summary>
    public static class Defaults
    {
        /// <summary>The default base model: SD 1.5 on the Hugging Face hub.</summary>
        public const string Model = "runwayml/stable-diffusion-v1-5";

        /// <summary>The output folder.</summary>
        public const string OutputDirectory = "output";

        /// <summary>Device selection.</summary>
        public const string Device = "auto";

        /// <summary>Image size.</summary>
        public const int Resolution = 512;

        /// <summary>Batch size.</summary>
        public const int BatchSize = 1;

        /// <summary>Learning rate.</summary>
        public const double LearningRate = 1e-4;

        /// <summary>Training steps.</summary>
        public const int MaxSteps = 1000;

        /// <summary>Warm-up steps.</summary>
        public const int WarmupSteps = 100;

        /// <summary>LoRA rank.</summary>
        public const int Rank = 4;

        /// <summary>Checkpoint interval.</summary>
        public const int CheckpointEvery = 500;

        /// <summary>Training caption.</summary>
        public const string Caption = "a sketch";

        /// <summary>sd-scripts' default <c>max_token_length</c> (its "None"): one 77-token window.</summary>
        public const int MaxTokenLength = 75;

        /// <summary>Random seed.</summary>
        public const ulong Seed = 42;

        /// <summary>Gradient clipping norm.</summary>
        public const double MaxGradNorm = 1.0;

        /// <summary>Skipped steps in a row after which training stops.</summary>
        public const int MaxConsecutiveSkippedSteps = 10;
    }

    /// <summary>Every problem with these options, each naming the option and value (empty when they are usable).</summary>
    /// <param name="hasDatasetObject">True when the builder was given an <see cref="IImageDataset"/>, so no data folder is needed.</param>
    internal IReadOnlyList<OptionError> Validate(bool hasDatasetObject)
    {
        var errors = new List<OptionError>();
        void Check(bool ok, string option, object? value, string message)
        {
            if (!ok)
                errors.Add(new OptionError(option, Format(value), message));
        }

        Check(!string.IsNullOrWhiteSpace(Model), nameof(Model), Model, "a model folder, checkpoint file or hub id is needed");
        Check(SingleFile is not null, nameof(SingleFile), null, "single-file options are needed (the default ones will do)");
        if (SingleFile is not null)
        {
            Check(SingleFile.ConfigDirectory is null || SingleFile.OriginalConfigFile is null, nameof(SingleFile), SingleFile.ConfigDirectory,
                "name either a config folder or an original LDM config file, not both");
            Check(SingleFile.ConfigDirectory is null || System.IO.Directory.Exists(SingleFile.ConfigDirectory), $"{nameof(SingleFile)}.{nameof(SingleFileOptions.ConfigDirectory)}",
                SingleFile.ConfigDirectory, "the folder does not exist");
            Check(SingleFile.OriginalConfigFile is null || File.Exists(SingleFile.OriginalConfigFile), $"{nameof(SingleFile)}.{nameof(SingleFileOptions.OriginalConfigFile)}",
                SingleFile.OriginalConfigFile, "the file does not exist");
        }

        if (!hasDatasetObject && !(Subsets ?? Array.Empty<DatasetSubset>()).Any(s => !s.IsRegularization))
        {
            Check(!string.IsNullOrWhiteSpace(DataDirectory), nameof(DataDirectory), DataDirectory, "a folder of training images (or a dataset object) is needed");
            if (!string.IsNullOrWhiteSpace(DataDirectory))
                Check(System.IO.Directory.Exists(DataDirectory), nameof(DataDirectory), DataDirectory, "the folder does not exist");
        }

        Check(!string.IsNullOrWhiteSpace(OutputDirectory), nameof(OutputDirectory), OutputDirectory, "an output folder is needed");
        if (!string.IsNullOrWhiteSpace(OutputDirectory))
            Check(!File.Exists(OutputDirectory), nameof(OutputDirectory), OutputDirectory, "this is a file, not a folder");
        Check(Pipeline.DeviceSpec.TryParse(Device, out _), nameof(Device), Device, "expected auto, cpu, cuda or cuda:N");
        Check(Resolution >= 8 && Resolution % 8 == 0, nameof(Resolution), Resolution, "must be a positive multiple of 8");
        Check(BatchSize >= 1, nameof(BatchSize), BatchSize, "must be at least 1");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), LearningRate, "must be a positive number");
        Check(MaxSteps >= 1, nameof(MaxSteps), MaxSteps, "must be at least 1");
        ValidateOptimizer(Check);
        Check(WarmupSteps is null or >= 0, nameof(WarmupSteps), WarmupSteps, "must not be negative");
        Check(WarmupRatio is not null || WarmupSteps is null || WarmupSteps <= MaxSteps, nameof(WarmupSteps), WarmupSteps, $"must not exceed MaxSteps ({MaxSteps})");
        Check(WarmupRatio is null || WarmupRatio is >= 0 and <= 1, nameof(WarmupRatio), WarmupRatio, "must be in [0, 1]");
        Check(Enum.IsDefined(LearningRateSchedule), nameof(LearningRateSchedule), LearningRateSchedule,
            "expected Constant, ConstantWithWarmup, Linear, Cosine, CosineWithRestarts or Polynomial");
        Check(WarmupRatio is null || LearningRateSchedule != LearningRateSchedule.Constant, nameof(WarmupRatio), WarmupRatio,
            "the constant schedule has no warm-up; use ConstantWithWarmup");
        Check(LearningRateCycles is null || LearningRateCycles >= 1, nameof(LearningRateCycles), LearningRateCycles, "must be at least 1");
        Check(LearningRateCycles is null || LearningRateSchedule == LearningRateSchedule.CosineWithRestarts, nameof(LearningRateCycles), LearningRateCycles,
            $"only the CosineWithRestarts schedule has cycles (this run's is {LearningRateSchedule})");
        Check(LearningRatePower is null || (LearningRatePower > 0 && double.IsFinite(LearningRatePower.Value)), nameof(LearningRatePower), LearningRatePower, "must be a positive number");
        Check(LearningRatePower is null || LearningRateSchedule == LearningRateSchedule.Polynomial, nameof(LearningRatePower), LearningRatePower,
            $"only the Polynomial schedule has a power (this run's is {LearningRateSchedule})");
        Check(LearningRateEnd is null || (LearningRateEnd >= 0 && double.IsFinite(LearningRateEnd.Value)), nameof(LearningRateEnd), LearningRateEnd, "must be 0 or a positive number");
        Check(LearningRateEnd is null || LearningRateSchedule == LearningRateSchedule.Polynomial, nameof(LearningRateEnd), LearningRateEnd,
            $"only the Polynomial schedule has an end learning rate (this run's is {LearningRateSchedule})");
        Check(LearningRateSchedule != LearningRateSchedule.Polynomial || !(LearningRate <= (LearningRateEnd ?? Training.LearningRateScheduleSettings.DefaultEndLearningRate)),
            nameof(LearningRateEnd), LearningRateEnd ?? Training.LearningRateScheduleSettings.DefaultEndLearningRate,
            $"the polynomial schedule's end learning rate must be below LearningRate ({Format(LearningRate)})");
        Check(Rank >= 1, nameof(Rank), Rank, "must be at least 1");
        Check(Alpha is null || (Alpha > 0 && double.IsFinite(Alpha.Value)), nameof(Alpha), Alpha, "must be a positive number");
        Check(Targets != LoraTargets.None && (Targets & ~LoraTargets.All) == 0, nameof(Targets), Targets, "choose at least one of Query, Key, Value, Output");
        Check(Enum.IsDefined(AttentionKinds), nameof(AttentionKinds), AttentionKinds, "unknown value");
        Check(LoraDropout is >= 0 and < 1, nameof(LoraDropout), LoraDropout, "must be in [0, 1)");
        Check(Enum.IsDefined(Preset), nameof(Preset), Preset, "expected Attention or Kohya");
        Check(TargetPatterns is not null && TargetPatterns.All(p => !string.IsNullOrWhiteSpace(p)), nameof(TargetPatterns), TargetPatterns is null ? null : string.Join(",", TargetPatterns),
            "patterns must not be empty");
        Check(ConvRank is null || ConvRank >= 1, nameof(ConvRank), ConvRank, "must be at least 1");
        Check(ConvAlpha is null || (ConvAlpha > 0 && double.IsFinite(ConvAlpha.Value)), nameof(ConvAlpha), ConvAlpha, "must be a positive number");
        Check(ConvAlpha is null || ConvRank is not null, nameof(ConvAlpha), ConvAlpha, "needs ConvRank");
        Check(TextEncoderRank is null || TextEncoderRank >= 1, nameof(TextEncoderRank), TextEncoderRank, "must be at least 1");
        Check(TextEncoderAlpha is null || (TextEncoderAlpha > 0 && double.IsFinite(TextEncoderAlpha.Value)), nameof(TextEncoderAlpha), TextEncoderAlpha, "must be a positive number");
        Check(TextEncoderLearningRate is null || (TextEncoderLearningRate >= 0 && double.IsFinite(TextEncoderLearningRate.Value)), nameof(TextEncoderLearningRate), TextEncoderLearningRate,
            "must be 0 or a positive number");
        Check(UnetLearningRate is null || (UnetLearningRate >= 0 && double.IsFinite(UnetLearningRate.Value)), nameof(UnetLearningRate), UnetLearningRate, "must be 0 or a positive number");
        Check((TextEncoderRank is null && TextEncoderAlpha is null && TextEncoderLearningRate is null) || TrainTextEncoder, nameof(TrainTextEncoder), TrainTextEncoder,
            "text-encoder rank, alpha or learning rate given but TrainTextEncoder is off");
        Check(NetworkDropout is >= 0 and < 1, nameof(NetworkDropout), NetworkDropout, "must be in [0, 1)");
        Check(RankDropout is >= 0 and < 1, nameof(RankDropout), RankDropout, "must be in [0, 1)");
        Check(ModuleDropout is >= 0 and < 1, nameof(ModuleDropout), ModuleDropout, "must be in [0, 1)");
        Check(CheckpointEvery >= 0, nameof(CheckpointEvery), CheckpointEvery, "must not be negative (0: only at the end)");
        Check(KeepLastCheckpoints is null || KeepLastCheckpoints >= 1, nameof(KeepLastCheckpoints), KeepLastCheckpoints, "must be at least 1");
        Check(Enum.IsDefined(MixedPrecision), nameof(MixedPrecision), MixedPrecision, "expected No, Fp16 or Bf16");
        Check(Caption is not null, nameof(Caption), Caption, "a caption is needed (it may be empty)");
        Check(TextEncoder.PromptChunks.MaxTokenLengths.Contains(MaxTokenLength), nameof(MaxTokenLength), MaxTokenLength,
            "must be 75, 150 or 225 (sd-scripts' max_token_length)");
        Check(ClipSkip >= 1, nameof(ClipSkip), ClipSkip, "must be at least 1 (1: the last layer, no skip; 2: the penultimate layer)");
        Check(GradientAccumulationSteps >= 1, nameof(GradientAccumulationSteps), GradientAccumulationSteps, "must be at least 1");
        Check(MaxGradNorm >= 0 && double.IsFinite(MaxGradNorm), nameof(MaxGradNorm), MaxGradNorm, "must be 0 (off) or a positive number");
        Check(NoiseOffset >= 0 && double.IsFinite(NoiseOffset), nameof(NoiseOffset), NoiseOffset, "must not be negative");
        Check(MinSnrGamma is null || MinSnrGamma > 0, nameof(MinSnrGamma), MinSnrGamma, "must be a positive number");
        Check(Enum.IsDefined(LossType), nameof(LossType), LossType, "expected L2, L1, Huber or SmoothL1");
        bool huber = LossType is LossType.Huber or LossType.SmoothL1;
        Check(HuberC is null || (HuberC > 0 && double.IsFinite(HuberC.Value)), nameof(HuberC), HuberC, "must be a positive number");
        Check(HuberC is null || huber, nameof(HuberC), HuberC, $"only the Huber and SmoothL1 losses use it (this run's is {LossType})");
        Check(HuberSchedule is null || Enum.IsDefined(HuberSchedule.Value), nameof(HuberSchedule), HuberSchedule, "expected Constant, Exponential or Snr");
        Check(HuberSchedule is null || huber, nameof(HuberSchedule), HuberSchedule, $"only the Huber and SmoothL1 losses use it (this run's is {LossType})");
        Check(IpNoiseGamma is null || (IpNoiseGamma > 0 && double.IsFinite(IpNoiseGamma.Value)), nameof(IpNoiseGamma), IpNoiseGamma, "must be a positive number");
        Check(VPredLikeLoss is null || (VPredLikeLoss > 0 && double.IsFinite(VPredLikeLoss.Value)), nameof(VPredLikeLoss), VPredLikeLoss, "must be a positive number");
        Check(ValidationEvery >= 0, nameof(ValidationEvery), ValidationEvery, "must not be negative");
        Check(!CacheLatents || !RandomCrop, nameof(CacheLatents), CacheLatents, "latents can only be cached when images are not randomly cropped");
        Check(!CacheLatentsToDisk || !RandomCrop, nameof(CacheLatentsToDisk), CacheLatentsToDisk, "latents can only be cached when images are not randomly cropped");
        Check(LatentCacheDirectory is null || CacheLatentsToDisk, nameof(LatentCacheDirectory), LatentCacheDirectory, "needs CacheLatentsToDisk");
        Check(LatentCacheDirectory is null || !File.Exists(LatentCacheDirectory), nameof(LatentCacheDirectory), LatentCacheDirectory, "this is a file, not a folder");
        Check(!GradientCheckpointing || (LoraDropout == 0 && NetworkDropout == 0 && RankDropout == 0 && ModuleDropout == 0), nameof(GradientCheckpointing), GradientCheckpointing,
            "gradient checkpointing recomputes each block in backward and would draw different LoRA dropout masks there; set the LoRA dropouts to 0");
        Check(Enum.IsDefined(OnNonFiniteLoss), nameof(OnNonFiniteLoss), OnNonFiniteLoss, "unknown value");
        Check(MaxConsecutiveSkippedSteps >= 0, nameof(MaxConsecutiveSkippedSteps), MaxConsecutiveSkippedSteps, "must not be negative (0: never stop)");
        ValidateDataset(Check);
        return errors;
    }

    private void ValidateOptimizer(Action<bool, string, object?, string> check)
    {
        check(Enum.IsDefined(Optimizer), nameof(Optimizer), Optimizer, $"expected {string.Join(", ", Enum.GetNames<OptimizerType>())}");
        check(OptimizerArguments is not null, nameof(OptimizerArguments), null, "must not be null (empty: the optimizer's defaults)");
        if (!Enum.IsDefined(Optimizer) || OptimizerArguments is null)
            return;
        foreach (string problem in Training.OptimizerChoice.Problems(Optimizer, OptimizerArguments))
            check(false, nameof(OptimizerArguments), string.Join(",", OptimizerArguments.Select(a => $"{a.Key}={a.Value}")), problem);
        double unet = UnetLearningRate ?? LearningRate;
        double textEncoder = TextEncoderLearningRate ?? LearningRate;
        check(Optimizer != OptimizerType.Prodigy || !TrainTextEncoder || unet == 0 || textEncoder == 0 || unet == textEncoder, nameof(TextEncoderLearningRate), textEncoder,
            $"Prodigy takes one learning rate for every parameter group (0 freezes a group); the UNet's is {Format(unet)}");
    }

    private void ValidateDataset(Action<bool, string, object?, string> check)
    {
        check(BucketResoSteps >= 8 && BucketResoSteps % 8 == 0, nameof(BucketResoSteps), BucketResoSteps, "must be a positive multiple of 8 (the VAE's scale factor)");
        if (EnableBucket && BucketResoSteps >= 8)
        {
            var (min, max) = BucketSides();
            check(min >= BucketResoSteps, nameof(MinBucketReso), min, $"must be at least BucketResoSteps ({BucketResoSteps})");
            check(max >= Resolution, nameof(MaxBucketReso), max, $"must be at least the resolution ({Resolution})");
            check(max >= min, nameof(MaxBucketReso), max, $"must be at least MinBucketReso ({min})");
            check(Resolution % BucketResoSteps == 0, nameof(BucketResoSteps), BucketResoSteps, $"must divide the resolution ({Resolution})");
        }

        check(!string.IsNullOrEmpty(CaptionExtension), nameof(CaptionExtension), CaptionExtension, "an extension such as .txt or .caption is needed");
        check(KeepTokens >= 0, nameof(KeepTokens), KeepTokens, "must not be negative");
        check(CaptionDropoutRate is >= 0 and <= 1, nameof(CaptionDropoutRate), CaptionDropoutRate, "must be between 0 and 1");
        check(CaptionTagDropoutRate is >= 0 and <= 1, nameof(CaptionTagDropoutRate), CaptionTagDropoutRate, "must be between 0 and 1");
        check(CaptionDropoutEveryNEpochs >= 0, nameof(CaptionDropoutEveryNEpochs), CaptionDropoutEveryNEpochs, "must not be negative (0: never)");
        check(MaxEpochs is null || MaxEpochs >= 1, nameof(MaxEpochs), MaxEpochs, "must be at least 1");
        foreach (var (subset, i) in (Subsets ?? Array.Empty<DatasetSubset>()).Select((s, i) => (s, i)))
        {
            check(subset is not null && !string.IsNullOrWhiteSpace(subset.ImageDirectory) && System.IO.Directory.Exists(subset.ImageDirectory),
                $"{nameof(Subsets)}[{i}].{nameof(DatasetSubset.ImageDirectory)}", subset?.ImageDirectory, "the folder does not exist");
            check(subset is null || subset.Repeats >= 1, $"{nameof(Subsets)}[{i}].{nameof(DatasetSubset.Repeats)}", subset?.Repeats, "must be at least 1");
        }

        check(RegularizationDirectory is null || !(Subsets ?? Array.Empty<DatasetSubset>()).Any(s => s.IsRegularization), nameof(RegularizationDirectory), RegularizationDirectory,
            "the subsets already name regularisation folders: give one or the other");
        check(RegularizationDirectory is null || System.IO.Directory.Exists(RegularizationDirectory), nameof(RegularizationDirectory), RegularizationDirectory,
            "the folder does not exist");
        check(LoraEmaDecay is null || LoraEmaDecay is > 0 and < 1, nameof(LoraEmaDecay), LoraEmaDecay, "must be between 0 and 1 (e.g. 0.999)");
        check(LoraEmaUpdateEvery >= 1, nameof(LoraEmaUpdateEvery), LoraEmaUpdateEvery, "must be at least 1");
        check(!LoraEmaWarmup || LoraEmaDecay is not null, nameof(LoraEmaWarmup), LoraEmaWarmup, "needs LoraEmaDecay");
        check(!LoraEmaOnly || LoraEmaDecay is not null, nameof(LoraEmaOnly), LoraEmaOnly, "needs LoraEmaDecay");
        check(SaveEveryNEpochs >= 0, nameof(SaveEveryNEpochs), SaveEveryNEpochs, "must not be negative (0: off)");
        check(PriorLossWeight >= 0 && double.IsFinite(PriorLossWeight), nameof(PriorLossWeight), PriorLossWeight, "must be 0 or a positive number");
        check(MaskDirectory is null || MaskedLoss, nameof(MaskDirectory), MaskDirectory, "needs MaskedLoss");
        check(MaskDirectory is null || System.IO.Directory.Exists(MaskDirectory), nameof(MaskDirectory), MaskDirectory, "the folder does not exist");
    }

    private static string? Format(object? value) => value switch
    {
        null => null,
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString(),
    };
}

/// <summary>What to do when a training step's loss is NaN or infinite.</summary>
public enum NonFiniteLossPolicy
{
    /// <summary>Skip the update (nothing non-finite reaches the LoRA), log the step and images, and go on.</summary>
    SkipStep,

    /// <summary>Stop training with an error naming the step and images; the last checkpoint is intact.</summary>
    Stop,
}

/// <summary>One problem with an option.</summary>
/// <param name="Option">The option's name (as on <see cref="LoraTrainingOptions"/>).</param>
/// <param name="Value">The offending value as text, or null.</param>
/// <param name="Message">Why it is not usable.</param>
public sealed record OptionError(string Option, string? Value, string Message)
{
    /// <inheritdoc />
    public override string ToString() => $"{Option} = {Value ?? "(none)"}: {Message}";
}

/// <summary>Options that cannot be used; lists every problem, each naming the option and value.</summary>
public sealed class InvalidOptionsException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="errors">Every problem found.</param>
    public InvalidOptionsException(IReadOnlyList<OptionError> errors)
        : base("Invalid options: " + string.Join("; ", errors), errors.Count > 0 ? errors[0].Option : null)
    {
        Errors = errors;
    }

    /// <summary>Creates the exception for one problem.</summary>
    /// <param name="option">The option at fault.</param>
    /// <param name="value">Its value.</param>
    /// <param name="message">Why it is not usable.</param>
    public InvalidOptionsException(string option, object? value, string message)
        : this(new[] { new OptionError(option, value is null ? null : Convert.ToString(value, CultureInfo.InvariantCulture), message) })
    {
    }

    /// <summary>Every problem found.</summary>
    public IReadOnlyList<OptionError> Errors { get; }
}
