using Microsoft.Extensions.Logging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using StableLora.Demo;

namespace StableLora.Samples.Cli;

/// <summary>
/// The built-in demo (<c>stablelora train</c> with no model and no data): writes the built-in demo model
/// (<see cref="DemoPipeline"/>, trained on sketches of a circle, a square, a triangle and a star), draws a dataset of a
/// fifth shape it never saw, diamonds captioned "a sketch of a diamond", renders "before" images, trains a LoRA with
/// checkpoints, renders the "after" images for the same prompts and seeds, measures how many drawings are diamonds
/// before and after and plots the loss, all under the output folder, in about a minute and a half on two CPU cores.
/// </summary>
internal static class Demo
{
    /// <summary>The diamond prompt's seeds (its drawings are the measure); the base prompts are drawn with the first.</summary>
    private static readonly ulong[] DiamondSeeds = [1, 2, 3, 4];

    private static readonly string DiamondPrompt = ShapeSketches.Caption(ShapeSketches.LoraShape);

    public static async Task<int> RunAsync(string output, Func<LoraTrainingBuilder, LoraTrainingBuilder> userFlags, ILogger logger, CancellationToken cancellationToken)
    {
        string model = Path.Combine(output, "demo-model");
        string dataset = Path.Combine(output, "dataset");
        string samples = Path.Combine(output, "samples");
        Console.WriteLine("StableLora demo: the built-in tiny model draws circles, squares, triangles and stars; a LoRA teaches it diamonds (no --model/--data given).");

        if (!File.Exists(Path.Combine(model, "model_index.json")))
        {
            DemoPipeline.Create(model);
            Console.WriteLine($"  model:   wrote {model}, the built-in demo model");
        }

        if (!Directory.Exists(dataset) || Directory.GetFiles(dataset, "*.png").Length == 0)
            ShapeSketches.WriteDataset(dataset, count: 16, size: DemoPipeline.ImageSize, seed: 1, ShapeSketches.LoraShape);
        Console.WriteLine($"  dataset: {dataset} ({Directory.GetFiles(dataset, "*.png").Length} sketches of diamonds, captioned \"{DiamondPrompt}\" by their .txt files)");

        var before = Render(model, lora: null, Path.Combine(samples, "before"), logger);
        Console.WriteLine($"  before:  {Path.Combine(samples, "before")} ({before.Files.Count} images)");

        var losses = new List<(long Step, double Loss, double Smoothed)>();
        var builder = userFlags(LoraTrainingBuilder.FromPretrained(model)
                .WithDataset(dataset)
                .WithCaption("", useCaptionFiles: true)
                .WithResolution(DemoPipeline.ImageSize)
                .WithBatchSize(2)
                .WithLearningRate(5e-3)
                .WithMaxSteps(300)
                .WithWarmupSteps(10)
                .WithCheckpointEvery(100)
                .WithDevice("cpu")
                .WithSeed(0))
            .WithOutputDirectory(output)
            .WithLogger(logger);
        var result = await TrainCommand.TrainWithProgressAsync(builder, cancellationToken, p => losses.Add((p.Step, p.Loss, p.SmoothedLoss))).ConfigureAwait(false);
        if (result.Cancelled)
        {
            Console.WriteLine($"Cancelled after step {result.StepsCompleted}; run the same command with --resume latest to continue.");
            return ExitCodes.Cancelled;
        }

        var after = Render(model, result.LoraPath, Path.Combine(samples, "after"), logger);
        string comparison = Path.Combine(samples, "before-after.png");
        DemoComparison.Save(comparison, before.Images, after.Images);
        string plot = Path.Combine(output, "loss.png");
        LossPlot.Save(plot, losses);

        int window = Math.Max(1, losses.Count / 10);
        double first = losses.Take(window).Average(l => l.Loss), last = losses.TakeLast(window).Average(l => l.Loss);
        Console.WriteLine();
        Console.WriteLine($"Trained {result.StepsCompleted} steps in {result.Elapsed.TotalSeconds:F0} s: mean loss {first:F3} over the first {window} steps, {last:F3} over the last {window}.");
        Console.WriteLine($"\"{DiamondPrompt}\", seeds {string.Join(", ", DiamondSeeds)}: drawn as a diamond (its outline fits better than a square's) " +
                          $"before {before.Diamonds}/{DiamondSeeds.Length}, after {after.Diamonds}/{DiamondSeeds.Length}.");
        Console.WriteLine($"The four base prompts, seed {DiamondSeeds[0]}: recognised as their shape before {before.BaseRecognized}/{ShapeSketches.BaseShapes.Count}, " +
                          $"after {after.BaseRecognized}/{ShapeSketches.BaseShapes.Count} (the demo's text encoder is random, so its captions lie close together and the LoRA leaks into them).");
        if (result.WeightsPath is not null)
            Console.WriteLine($"  LoRA:        {result.WeightsPath} (diffusers' attention-processor format; torch.load reads it)");
        Console.WriteLine($"{(result.WeightsPath is null ? "  LoRA:        " : "               ")}{result.KohyaWeightsPath} (AUTOMATIC1111 / ComfyUI)");
        Console.WriteLine($"  checkpoints: {Path.Combine(output, "checkpoint-step-*")}");
        Console.WriteLine($"  images:      {comparison} (top row before, bottom row after)");
        Console.WriteLine($"  loss curve:  {plot}");
        Console.WriteLine();
        Console.WriteLine("With a real SD 1.5 (a diffusers folder):");
        Console.WriteLine("  stablelora train --model /path/to/stable-diffusion-v1-5 --data my-images --caption \"a sketch\" --mixed-precision bf16 --device cuda");
        Console.WriteLine("  stablelora generate --model /path/to/stable-diffusion-v1-5 --lora output/lora_weights.pt --prompt \"a sketch of a cat\"");
        return ExitCodes.Success;
    }

    /// <summary>The images for every demo prompt and seed, saved under <paramref name="directory"/>, with their measures.</summary>
    internal static DemoImages Render(string model, string? lora, string directory, ILogger logger)
    {
        var builder = StableDiffusionGenerator.FromPretrained(model).WithScheduler(SchedulerKind.DpmSolverMultistep).WithDevice("cpu").WithLogger(logger);
        if (lora is not null)
            builder.WithLora(lora);
        using var generator = builder.Build();
        Directory.CreateDirectory(directory);
        var images = new List<RgbImage>();
        var files = new List<string>();
        RgbImage Draw(Shape shape, ulong seed)
        {
            using var result = generator.Generate(ShapeSketches.Caption(shape), new GenerationOptions { Steps = 20, Seed = seed });
            string file = Path.Combine(directory, $"{shape.ToString().ToLowerInvariant()}-{seed}.png");
            result.SavePng(0, file);
            images.Add(result.GetPixels(0));
            files.Add(file);
            return images[^1];
        }

        int baseRecognized = ShapeSketches.BaseShapes.Count(shape => ShapeScores.Recognize(Draw(shape, DiamondSeeds[0])).Best.Shape == shape);
        int diamonds = DiamondSeeds.Count(seed => ShapeScores.IsDiamondRatherThanSquare(Draw(ShapeSketches.LoraShape, seed)));
        return new DemoImages(images, files, diamonds, baseRecognized);
    }
}

/// <summary>The demo's images for one model state and what they show.</summary>
/// <param name="Images">The four base prompts at the first seed, then the diamond prompt at each seed.</param>
/// <param name="Files">Where each was saved.</param>
/// <param name="Diamonds">How many of the diamond prompt's drawings are diamonds (<see cref="ShapeScores.IsDiamondRatherThanSquare"/>).</param>
/// <param name="BaseRecognized">How many base prompts' drawings show their shape (<see cref="ShapeScores.Recognize"/>).</param>
internal sealed record DemoImages(IReadOnlyList<RgbImage> Images, IReadOnlyList<string> Files, int Diamonds, int BaseRecognized);

/// <summary>The before/after picture: the "before" images in the top row, the "after" images below, each enlarged 2x.</summary>
internal static class DemoComparison
{
    public static void Save(string path, IReadOnlyList<RgbImage> before, IReadOnlyList<RgbImage> after)
    {
        const int scale = 2, gap = 4;
        int size = before[0].Width * scale;
        using var canvas = new Image<Rgb24>(before.Count * (size + gap) - gap, 2 * size + gap, new Rgb24(255, 255, 255));
        foreach (var (row, images) in new[] { (0, before), (1, after) })
        {
            for (int i = 0; i < images.Count; i++)
            {
                using var image = images[i].ToImageSharp();
                image.Mutate(x => x.Resize(size, size, KnownResamplers.NearestNeighbor));
                canvas.Mutate(x => x.DrawImage(image, new Point(i * (size + gap), row * (size + gap)), 1f));
            }
        }

        canvas.SaveAsPng(path);
    }
}

/// <summary>The loss curve as a PNG (ScottPlot): each step's loss and its moving average.</summary>
internal static class LossPlot
{
    public static void Save(string path, IReadOnlyList<(long Step, double Loss, double Smoothed)> losses)
    {
        var plot = new ScottPlot.Plot();
        double[] steps = losses.Select(l => (double)l.Step).ToArray();
        var raw = plot.Add.Scatter(steps, losses.Select(l => l.Loss).ToArray());
        raw.LegendText = "loss";
        raw.MarkerSize = 0;
        raw.LineWidth = 1;
        raw.Color = ScottPlot.Colors.SteelBlue.WithAlpha(0.5);
        var smoothed = plot.Add.Scatter(steps, losses.Select(l => l.Smoothed).ToArray());
        smoothed.LegendText = "moving average";
        smoothed.MarkerSize = 0;
        smoothed.LineWidth = 2.5f;
        smoothed.Color = ScottPlot.Colors.OrangeRed;
        plot.Title("StableLora training loss");
        plot.XLabel("step");
        plot.YLabel("MSE loss");
        plot.ShowLegend();
        plot.SavePng(path, 800, 450);
    }
}
