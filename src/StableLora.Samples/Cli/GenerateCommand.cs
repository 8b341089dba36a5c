using System.CommandLine;
using Microsoft.Extensions.Logging;
using StableLora.Schedulers;

namespace StableLora.Samples.Cli;

/// <summary><c>stablelora generate</c>: text to image, with LoRAs, writing <c>DIR/&lt;seed&gt;-&lt;index&gt;.png</c> with A1111 parameters.</summary>
internal sealed class GenerateCommand
{
    private readonly Option<string> _model = new("--model") { Description = "Base model: a diffusers folder, a single-file checkpoint or a hub id org/name[@revision]", Required = true };
    private readonly ModelSourceFlags _modelSource = new();
    private readonly Option<string> _prompt = new("--prompt") { Description = "What to draw", DefaultValueFactory = _ => "" };
    private readonly Option<string?> _negative = Parsing.Option<string?>("--negative-prompt", "What not to draw");
    private readonly Option<string[]> _lora = new("--lora") { Description = "LoRA file, optionally :WEIGHT or :UNET_WEIGHT:TEXT_ENCODER_WEIGHT (repeatable)", AllowMultipleArgumentsPerToken = false };
    private readonly Option<bool> _skipUnmatched = Parsing.Option<bool>("--skip-unmatched-lora-keys", "Load a LoRA whose modules do not all match the model, warning about the others");
    private readonly Option<string> _scheduler = new("--scheduler") { Description = "pndm, ddim, ddpm, euler, euler-a or dpmpp-2m (default: the model's)", DefaultValueFactory = _ => "" };
    private readonly Option<bool> _karras = Parsing.Option<bool>("--karras", "Karras sigmas (euler, dpmpp-2m)");
    private readonly Option<int> _steps = new("--steps") { Description = "Denoising steps", DefaultValueFactory = _ => 25 };
    private readonly Option<double> _guidance = new("--guidance") { Description = "Classifier-free guidance scale", DefaultValueFactory = _ => 7.5 };
    private readonly Option<ulong?> _seed = Parsing.Option<ulong?>("--seed", "Seed (default: random, printed)");
    private readonly Option<int?> _width = Parsing.Option<int?>("--width", "Width in pixels (default: the model's)");
    private readonly Option<int?> _height = Parsing.Option<int?>("--height", "Height in pixels (default: the model's)");
    private readonly Option<int> _count = new("--count") { Description = "Images", DefaultValueFactory = _ => 1 };
    private readonly Option<string> _out = new("--out") { Description = "Output folder", DefaultValueFactory = _ => "images" };
    private readonly Option<string> _device = new("--device") { Description = "auto, cpu, cuda or cuda:N", DefaultValueFactory = _ => "auto" };
    private readonly Option<string> _dtype = new("--dtype") { Description = "fp32, fp16 or bf16", DefaultValueFactory = _ => "fp32" };
    private readonly Option<bool> _tiling = Parsing.Option<bool>("--vae-tiling", "Decode with the VAE in tiles (large images)");
    private readonly Option<bool> _slicing = Parsing.Option<bool>("--attention-slicing", "Compute attention in slices (less memory)");
    private readonly Option<int> _clipSkip = new("--clip-skip") { Description = "Text-encoder layer from the end: 1 last (default), 2 penultimate (A1111's Clip skip; diffusers' clip_skip + 1)", DefaultValueFactory = _ => 1 };
    private readonly Option<string?> _initImage = Parsing.Option<string?>("--init-image", "Image to image: start from this picture (PNG, JPEG, ...; the output has its size rounded down to a multiple of 8 unless --width/--height are given)");
    private readonly Option<double?> _strength = Parsing.Option<double?>("--strength", "With --init-image: how much is repainted, 0 to 1 (default 0.8, diffusers' strength, A1111's denoising strength)");
    private readonly Option<bool> _truncatePrompts = Parsing.Option<bool>("--truncate-prompts", "Drop the tokens of prompts after the 75th as diffusers does, instead of encoding 75-token chunks as AUTOMATIC1111 does");

    public Command Build(Option<bool> verbose)
    {
        var command = new Command("generate", "Generate images, optionally with LoRAs");
        foreach (var option in new Option[] { _model, _prompt, _negative, _lora, _skipUnmatched, _scheduler, _karras, _steps, _guidance, _seed, _width, _height, _count, _out, _device, _dtype, _tiling, _slicing, _clipSkip, _initImage, _strength, _truncatePrompts }.Concat(_modelSource.Options))
            command.Options.Add(option);
        command.SetAction((result, cancellationToken) => Cli.RunAsync(result.GetValue(verbose), logger => RunAsync(result, logger, cancellationToken)));
        return command;
    }

    private async Task<int> RunAsync(ParseResult result, ILogger logger, CancellationToken cancellationToken)
    {
        var builder = StableDiffusionGenerator.FromPretrained(result.GetValue(_model)!)
            .WithDevice(result.GetValue(_device)!)
            .WithDType(Parsing.DType(result.GetValue(_dtype)!))
            .WithSingleFileOptions(_modelSource.SingleFile(result))
            .WithHubOptions(_modelSource.Hub(result))
            .WithLogger(logger);
        string scheduler = result.GetValue(_scheduler)!;
        if (scheduler.Length == 0 && result.GetValue(_karras))
            throw new InvalidOptionsException("--karras", "true", "name the scheduler too: --scheduler euler or --scheduler dpmpp-2m");
        if (scheduler.Length > 0)
            builder.WithScheduler(SchedulerKindNames.Parse(scheduler), result.GetValue(_karras));
        foreach (var spec in result.GetValue(_lora) ?? Array.Empty<string>())
        {
            var (path, unet, textEncoder) = Parsing.LoraSpec(spec);
            builder.WithLora(path, unet, textEncoder);
        }

        if (result.GetValue(_skipUnmatched))
            builder.SkipUnmatchedLoraKeys();

        if (result.GetValue(_tiling))
            builder.WithVaeTiling();
        if (result.GetValue(_slicing))
            builder.WithAttentionSlicing();

        string? initPath = result.GetValue(_initImage);
        RgbImage? initImage = null;
        if (initPath is not null)
        {
            try
            {
                initImage = RgbImage.Load(initPath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or SixLabors.ImageSharp.ImageFormatException or NotSupportedException)
            {
                throw new InvalidOptionsException("--init-image", initPath, $"cannot be read as an image: {e.Message}");
            }
        }

        using var generator = builder.Build();
        var options = new GenerationOptions
        {
            NegativePrompt = result.GetValue(_negative),
            Steps = result.GetValue(_steps),
            GuidanceScale = result.GetValue(_guidance),
            Seed = result.GetValue(_seed),
            Width = result.GetValue(_width),
            Height = result.GetValue(_height),
            ImageCount = result.GetValue(_count),
            ClipSkip = result.GetValue(_clipSkip),
            InitImage = initImage,
            Strength = result.GetValue(_strength),
            LongPrompts = result.GetValue(_truncatePrompts) ? LongPromptMode.Truncate : LongPromptMode.Chunk,
        };
        // The total is the number of UNet evaluations, which PNDM makes one more of than steps (as diffusers does);
        // image to image runs the last int(steps * strength) of them. The options are checked first, so that a bad
        // strength is reported as such.
        generator.CheckOptions(options);
        int total = initImage is null ? generator.ModelEvaluationCount(options.Steps) : generator.ModelEvaluationCount(options.Steps, options.Strength ?? GenerationOptions.DefaultStrength);
        using var images = await ProgressDisplay.RunAsync("generate", total, report =>
            generator.GenerateAsync(result.GetValue(_prompt)!, options, new StepReporter(p => report(p.Step, "")), cancellationToken)).ConfigureAwait(false);
        foreach (var path in images.SaveAll(result.GetValue(_out)!))
            Console.WriteLine(path);
        return ExitCodes.Success;
    }

    private sealed class StepReporter(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }
}
