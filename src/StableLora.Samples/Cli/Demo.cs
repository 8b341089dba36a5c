using Microsoft.Extensions.Logging;
using StableLora.Data;
using StableLora.Schedulers;

namespace StableLora.Samples.Cli;

/// <summary>
/// The built-in demo (<c>stablelora train</c> with no model and no data): builds the tiny default model from the
/// built-in tiny model (<see cref="RandomPipeline.CreateTiny"/>), draws a sketch dataset, renders a "before" image, trains a LoRA with
/// checkpoints, renders the "after" image and plots the loss, all under the output folder, in about two minutes on
/// two CPU cores.
/// </summary>
internal static class Demo
{
    private const string Caption = "a sketch";
    private const ulong ImageSeed = 1234;

    public static async Task<int> RunAsync(string output, Func<LoraTrainingBuilder, LoraTrainingBuilder> userFlags, ILogger logger, CancellationToken cancellationToken)
    {
        string model = Path.Combine(output, "demo-model");
        string dataset = Path.Combine(output, "dataset");
        string samples = Path.Combine(output, "samples");
        Console.WriteLine("StableLora demo: a tiny random-weight SD-1.5-layout model and generated sketches (no --model/--data given).");

        if (!File.Exists(Path.Combine(model, "model_index.json")))
        {
            RandomPipeline.CreateTiny(model, seed: 0);
            Console.WriteLine($"  model:   created {model}, the built-in tiny model (random weights, seed 0)");
        }

        if (!Directory.Exists(dataset) || Directory.GetFiles(dataset, "*.png").Length == 0)
            SketchImageGenerator.Generate(dataset, count: 8, size: 64, seed: 0);
        Console.WriteLine($"  dataset: {dataset} ({Directory.GetFiles(dataset, "*.png").Length} sketches)");

        string before = Render(model, lora: null, Path.Combine(samples, "before"), logger);
        Console.WriteLine($"  before:  {before}");

        var losses = new List<(long Step, double Loss, double Smoothed)>();
        var builder = userFlags(LoraTrainingBuilder.FromPretrained(model)
                .WithDataset(dataset)
                .WithCaption(Caption)
                .WithResolution(64)
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

        string after = Render(model, result.LoraPath, Path.Combine(samples, "after"), logger);
        string plot = Path.Combine(output, "loss.png");
        LossPlot.Save(plot, losses);

        int window = Math.Max(1, losses.Count / 10);
        double first = losses.Take(window).Average(l => l.Loss), last = losses.TakeLast(window).Average(l => l.Loss);
        Console.WriteLine();
        Console.WriteLine($"Trained {result.StepsCompleted} steps in {result.Elapsed.TotalSeconds:F0} s: mean loss {first:F3} over the first {window} steps, {last:F3} over the last {window} ({(1 - last / first) * 100:F0}% lower).");
        if (result.WeightsPath is not null)
            Console.WriteLine($"  LoRA:        {result.WeightsPath} (the seed's format; torch.load reads it)");
        Console.WriteLine($"{(result.WeightsPath is null ? "  LoRA:        " : "               ")}{result.KohyaWeightsPath} (AUTOMATIC1111 / ComfyUI)");
        Console.WriteLine($"  checkpoints: {Path.Combine(output, "checkpoint-step-*")}");
        Console.WriteLine($"  images:      {before} (before), {after} (after)");
        Console.WriteLine($"  loss curve:  {plot}");
        Console.WriteLine();
        Console.WriteLine("The demo model has random weights, so its images are coloured noise. With a real SD 1.5 (a diffusers folder):");
        Console.WriteLine("  stablelora train --model /path/to/stable-diffusion-v1-5 --data my-images --caption \"a sketch\" --mixed-precision bf16 --device cuda");
        Console.WriteLine("  stablelora generate --model /path/to/stable-diffusion-v1-5 --lora output/lora_weights.pt --prompt \"a sketch of a cat\"");
        return ExitCodes.Success;
    }

    private static string Render(string model, string? lora, string directory, ILogger logger)
    {
        var builder = StableDiffusionGenerator.FromPretrained(model).WithScheduler(SchedulerKind.DpmSolverMultistep).WithDevice("cpu").WithLogger(logger);
        if (lora is not null)
            builder.WithLora(lora);
        using var generator = builder.Build();
        using var result = generator.Generate(Caption, new GenerationOptions { Steps = 20, Seed = ImageSeed });
        return result.SaveAll(directory)[0];
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
