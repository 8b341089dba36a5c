using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Processing;
using System.Diagnostics;
using StableLora;
using StableLora.Demo;
using StableLora.Layers;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.TextEncoder;
using StableLora.Training;
using StableLora.Unet;
using StableLora.Vae;
using TorchSharp;
using static TorchSharp.torch;

// Trains the built-in demo model from scratch: first the VAE on the shape sketches, then the UNet (epsilon
// prediction on DDPM's scaled-linear schedule, 10% empty captions for classifier-free guidance) on the VAE's
// latents, with the text encoder frozen at its random initialisation. Writes a diffusers folder with float16 weights
// and scores what it draws. Deterministic for a given CPU and thread count. See README.md beside this file.
var settings = DemoModelSettings.Parse(args);
torch.set_num_threads(settings.Threads);
CpuKernels.EnsureChecked();
var clock = Stopwatch.StartNew();
Directory.CreateDirectory(settings.Output);
foreach (var component in new[] { "unet", "vae", "text_encoder" })
{
    Directory.CreateDirectory(Path.Combine(settings.Output, component));
}

Console.WriteLine($"demo model -> {settings.Output} ({settings.Images} images, VAE {settings.VaeSteps} steps, UNet {settings.UnetSteps} steps, {settings.Threads} threads)");
using var images = DemoData.Images(settings.Images, settings.Size, settings.Seed);

// 1. VAE.
var vaeConfigJson = Sd15Presets.TinyJson("vae");
using var vae = settings.VaeFrom is { } trainedVae
    ? ComponentLoader.LoadVae(trainedVae, new ComponentLoadSettings(CPU, float32, null, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance))
    : ModelInitializer.InitializeRandom(new AutoencoderKL(AutoencoderKLConfig.FromJson(vaeConfigJson, "vae"), TensorSpec.CpuFloat32), settings.Seed + 1);
if (settings.VaeFrom is null)
    VaeTraining.Train(vae, images, settings);
Float16.RoundWeights(vae);
vae.eval();
VaeTraining.ReportReconstructions(vae, images, Path.Combine(settings.Output, "..", "vae-reconstructions.png"));
var (means, stds) = VaeTraining.EncodeAll(vae, images);
double scalingFactor = 1.0 / means.std().item<float>();
Console.WriteLine($"[{clock.Elapsed:hh\\:mm\\:ss}] latent scaling factor {scalingFactor:G6}");
vaeConfigJson = vaeConfigJson.Replace("\"scaling_factor\": 0.18215", $"\"scaling_factor\": {Math.Round(scalingFactor, 5).ToString(System.Globalization.CultureInfo.InvariantCulture)}", StringComparison.Ordinal);
DiffusersFolderWriter.WriteComponent(Path.Combine(settings.Output, "vae"), vaeConfigJson, Float16.Copy(vae));

// 2. Text encoder: random and frozen; only the conditioning of the captions (and the empty prompt) is needed.
var textConfigJson = Sd15Presets.TinyJson("text_encoder");
using var textEncoder = ModelInitializer.InitializeRandom(new ClipTextModel(ClipTextConfig.FromJson(textConfigJson, "text_encoder"), TensorSpec.CpuFloat32), settings.Seed + 2);
Float16.RoundWeights(textEncoder);
textEncoder.eval();
DiffusersFolderWriter.WriteComponent(Path.Combine(settings.Output, "text_encoder"), textConfigJson, Float16.Copy(textEncoder), transformersNaming: true);
var tokenizer = TokenizerFiles.BuiltIn.Load();
Tensor conditioning;
using (no_grad())
{
    var prompts = ShapeSketches.BaseShapes.Select(ShapeSketches.Caption).Append("").ToList();
    conditioning = textEncoder.Forward(tokenizer.EncodeBatch(prompts)).LastHiddenState.detach();
}

// 3. UNet.
var unetConfigJson = Sd15Presets.TinyJson("unet");
using var unet = ModelInitializer.InitializeRandom(new UNet2DConditionModel(UNet2DConditionConfig.FromJson(unetConfigJson, "unet"), TensorSpec.CpuFloat32), settings.Seed + 3);
string schedulerJson = Sd15Presets.TinyJson("scheduler");
File.WriteAllText(Path.Combine(settings.Output, "scheduler.tmp.json"), schedulerJson);
var schedule = NoiseSchedule.Create(SchedulerConfig.FromFile(Path.Combine(settings.Output, "scheduler.tmp.json")), "PNDMScheduler");
File.Delete(Path.Combine(settings.Output, "scheduler.tmp.json"));
UnetTraining.Train(unet, means, stds, scalingFactor, conditioning, schedule, settings);
DiffusersFolderWriter.WriteComponent(Path.Combine(settings.Output, "unet"), unetConfigJson, Float16.Copy(unet));

TokenizerFiles.BuiltIn.WriteTo(Path.Combine(settings.Output, "tokenizer"));
Directory.CreateDirectory(Path.Combine(settings.Output, "scheduler"));
File.WriteAllText(Path.Combine(settings.Output, "scheduler", "scheduler_config.json"), schedulerJson);
DiffusersFolderWriter.WriteModelIndex(settings.Output);
Console.WriteLine($"[{clock.Elapsed:hh\\:mm\\:ss}] written {settings.Output}");

// 4. What it draws.
DemoEvaluation.Report(settings.Output, settings.EvalSeeds, Path.Combine(settings.Output, "..", "samples"));
Console.WriteLine($"total {clock.Elapsed:hh\\:mm\\:ss}");

internal sealed record DemoModelSettings(string Output, int Images, int Size, int VaeSteps, int UnetSteps, int BatchSize, int Threads, ulong Seed, int EvalSeeds, string? VaeFrom)
{
    public static DemoModelSettings Parse(string[] args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
                throw new ArgumentException($"expected --name value pairs, got '{args[i]}'");
            values[args[i][2..]] = args[i + 1];
        }

        int Int(string name, int fallback) => values.Remove(name, out var v) ? int.Parse(v, System.Globalization.CultureInfo.InvariantCulture) : fallback;
        var settings = new DemoModelSettings(
            values.Remove("output", out var output) ? output : "eng/demo-model/out/model",
            Int("images", 2048), Int("size", 64), Int("vae-steps", 3000), Int("unet-steps", 12000), Int("batch-size", 32),
            Int("threads", Environment.ProcessorCount), (ulong)Int("seed", 0), Int("eval-seeds", 8),
            values.Remove("vae-from", out var vaeFrom) ? vaeFrom : null);
        if (values.Count > 0)
            throw new ArgumentException($"unknown option(s): {string.Join(", ", values.Keys.Select(k => "--" + k))}");
        return settings;
    }
}

internal static class DemoData
{
    /// <summary>The black-ink shape sketches as [N, 3, size, size] in [-1, 1].</summary>
    public static Tensor Images(int count, int size, ulong seed)
    {
        var bytes = new byte[(long)count * size * size * 3];
        for (int i = 0; i < count; i++)
            ShapeSketches.Draw(i, size, (int)seed, ShapeSketches.BlackInk).Pixels.CopyTo(bytes, (long)i * size * size * 3);
        using var raw = tensor(bytes, new long[] { count, size, size, 3 });
        return raw.permute(0, 3, 1, 2).to(float32).div(127.5).sub(1.0).contiguous();
    }
}

internal static class Float16
{
    /// <summary>Rounds every parameter to float16 and back, so training continues from exactly the weights that ship.</summary>
    public static void RoundWeights(nn.Module module)
    {
        using var noGrad = no_grad();
        foreach (var (_, parameter) in module.named_parameters())
        {
            using var rounded = parameter.to(float16).to(float32);
            parameter.copy_(rounded);
        }
    }

    /// <summary>The module's state as float16 tensors, in the state dict's order, for writing.</summary>
    public static IEnumerable<KeyValuePair<string, Tensor>> Copy(nn.Module module) =>
        StateDicts.Ordered(module).Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.dtype == float32 ? kv.Value.detach().to(float16) : kv.Value));
}

internal static class VaeTraining
{
    public static void Train(AutoencoderKL vae, Tensor images, DemoModelSettings settings)
    {
        vae.train();
        var parameters = vae.named_parameters().Select(p => (p.name, p.parameter)).ToList();
        var optimizer = new AdamWOptimizer(parameters, new AdamWSettings(WeightDecay: 0));
        using var generator = new Generator(settings.Seed + 10, CPU);
        var clock = Stopwatch.StartNew();
        double running = 0;
        for (int step = 1; step <= settings.VaeSteps; step++)
        {
            using var scope = NewDisposeScope();
            var index = randint(images.shape[0], new long[] { settings.BatchSize }, generator: generator);
            var batch = images.index_select(0, index);
            var posterior = vae.Encode(batch);
            var latents = posterior.Sample(generator);
            var reconstruction = vae.Decode(latents);
            var reconstructionLoss = (reconstruction - batch).abs().mean();
            var kl = posterior.Mean.pow(2).add(posterior.LogVar.exp()).sub(1.0).sub(posterior.LogVar).sum().mul(0.5 / batch.numel());
            var loss = reconstructionLoss + kl.mul(1e-4);
            optimizer.ZeroGrad();
            loss.backward();
            double lr = 1e-3 * CosineWithWarmup.Multiplier(step - 1, 100, settings.VaeSteps);
            optimizer.Step(lr);
            running = step == 1 ? reconstructionLoss.item<float>() : running * 0.98 + reconstructionLoss.item<float>() * 0.02;
            if (step % 200 == 0 || step == settings.VaeSteps)
                Console.WriteLine($"vae  step {step,6}  L1 {running:F4}  kl {kl.item<float>():F3}  {clock.Elapsed.TotalSeconds / step:F3} s/step");
        }
    }

    /// <summary>Prints how often the VAE's reconstructions of the first images are still recognised as their shape, and saves them beside the originals.</summary>
    public static void ReportReconstructions(AutoencoderKL vae, Tensor images, string path)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        int count = (int)Math.Min(16, images.shape[0]);
        var originals = images.narrow(0, 0, count);
        var reconstructions = vae.Decode(vae.Encode(originals).Mean);
        int recognized = 0;
        double f1 = 0;
        var both = cat(new[] { originals, reconstructions }, 3).add(1.0).mul(127.5).round().clamp(0, 255).to(uint8).permute(0, 2, 3, 1).contiguous();
        int size = (int)images.shape[2];
        using var grid = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(2 * size * 4, size * ((count + 3) / 4));
        for (int i = 0; i < count; i++)
        {
            var reconstruction = reconstructions[i].add(1.0).mul(127.5).round().clamp(0, 255).to(uint8).permute(1, 2, 0).contiguous();
            var image = new RgbImage(size, size, reconstruction.data<byte>().ToArray());
            var recognition = ShapeScores.Recognize(image);
            recognized += recognition.Best.Shape == ShapeSketches.ShapeOf(i) ? 1 : 0;
            f1 += recognition.For(ShapeSketches.ShapeOf(i)).F1;
            using var pair = SixLabors.ImageSharp.Image.LoadPixelData<SixLabors.ImageSharp.PixelFormats.Rgb24>(both[i].data<byte>().ToArray(), 2 * size, size);
            grid.Mutate(g => g.DrawImage(pair, new SixLabors.ImageSharp.Point(2 * size * (i % 4), size * (i / 4)), 1f));
        }

        grid.SaveAsPng(path);
        Console.WriteLine($"vae reconstructions: {recognized}/{count} recognised as their shape, mean F1 {f1 / count:F3} ({path})");
    }

    /// <summary>The posterior mean and standard deviation of every image.</summary>
    public static (Tensor Means, Tensor Stds) EncodeAll(AutoencoderKL vae, Tensor images)
    {
        using var noGrad = no_grad();
        var means = new List<Tensor>();
        var stds = new List<Tensor>();
        for (long start = 0; start < images.shape[0]; start += 64)
        {
            var posterior = vae.Encode(images.narrow(0, start, Math.Min(64, images.shape[0] - start)));
            means.Add(posterior.Mean.detach().clone());
            stds.Add(posterior.Std.detach().clone());
        }

        return (cat(means), cat(stds));
    }
}

internal static class UnetTraining
{
    public static void Train(UNet2DConditionModel unet, Tensor means, Tensor stds, double scalingFactor, Tensor conditioning, NoiseSchedule schedule, DemoModelSettings settings)
    {
        unet.train();
        var parameters = unet.named_parameters().Select(p => (p.name, p.parameter)).ToList();
        var optimizer = new AdamWOptimizer(parameters, new AdamWSettings());
        using var generator = new Generator(settings.Seed + 20, CPU);
        using var alphasCumprod = tensor(schedule.AlphasCumprod);
        int shapes = ShapeSketches.BaseShapes.Count;
        var clock = Stopwatch.StartNew();
        double running = 0;
        for (int step = 1; step <= settings.UnetSteps; step++)
        {
            using var scope = NewDisposeScope();
            var index = randint(means.shape[0], new long[] { settings.BatchSize }, generator: generator);
            var noiseForLatents = randn(new long[] { settings.BatchSize, means.shape[1], means.shape[2], means.shape[3] }, generator: generator);
            var latents = means.index_select(0, index).add(stds.index_select(0, index).mul(noiseForLatents)).mul(scalingFactor);
            var noise = randn(latents.shape, generator: generator);
            var timesteps = randint(schedule.AlphasCumprod.Length, new long[] { settings.BatchSize }, generator: generator);
            var acp = alphasCumprod.index_select(0, timesteps).reshape(-1, 1, 1, 1);
            var noisy = latents.mul(acp.sqrt()).add(noise.mul(acp.neg().add(1.0).sqrt()));

            // Caption i belongs to image i (shapes take turns); 10% of samples get the empty prompt (the last row).
            var dropped = rand(new long[] { settings.BatchSize }, generator: generator).lt(0.1);
            var captionIndex = where(dropped, full(new long[] { settings.BatchSize }, shapes, int64), index.remainder(shapes));
            var text = conditioning.index_select(0, captionIndex);

            var prediction = unet.Forward(noisy, timesteps, text);
            var loss = nn.functional.mse_loss(prediction, noise);
            optimizer.ZeroGrad();
            loss.backward();
            double lr = 1e-3 * CosineWithWarmup.Multiplier(step - 1, 200, settings.UnetSteps);
            optimizer.Step(lr);
            running = step == 1 ? loss.item<float>() : running * 0.99 + loss.item<float>() * 0.01;
            if (step % 250 == 0 || step == settings.UnetSteps)
                Console.WriteLine($"unet step {step,6}  loss {running:F4}  lr {lr:E2}  {clock.Elapsed.TotalSeconds / step:F3} s/step");
        }

        Float16.RoundWeights(unet);
    }
}

internal static class DemoEvaluation
{
    /// <summary>Generates <paramref name="seeds"/> images per caption and prints how often each is recognised as its shape.</summary>
    public static void Report(string model, int seeds, string samples)
    {
        Directory.CreateDirectory(samples);
        using var generator = StableDiffusionGenerator.FromPretrained(model).WithScheduler(SchedulerKind.DpmSolverMultistep).WithDevice("cpu").Build();
        foreach (var shape in ShapeSketches.BaseShapes)
        {
            int recognized = 0;
            double f1 = 0;
            for (int seed = 0; seed < seeds; seed++)
            {
                using var result = generator.Generate(ShapeSketches.Caption(shape), new GenerationOptions { Steps = 20, Seed = (ulong)seed });
                var pixels = result.GetPixels(0);
                var recognition = ShapeScores.Recognize(pixels);
                if (recognition.Best.Shape == shape)
                    recognized++;
                f1 += recognition.For(shape).F1;
                result.SavePng(0, Path.Combine(samples, $"{shape.ToString().ToLowerInvariant()}-{seed}.png"));
            }

            Console.WriteLine($"{ShapeSketches.Caption(shape),-24} recognised {recognized}/{seeds}, mean F1 {f1 / seeds:F3}");
        }
    }
}
