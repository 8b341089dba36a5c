using System.Text.Json;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.IO;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.Schedulers;
using static TorchSharp.torch;

namespace StableLora.Tests.Generation;

/// <summary>
/// Image to image (issue 16, item 5) against diffusers v0.21.4's <c>StableDiffusionImg2ImgPipeline</c> on the tiny-sd
/// pipeline (Fixtures/img2img, made by tools/generate_img2img_fixtures.py). Tolerances are the seeded text-to-image
/// cases' (tiny-sd cases.json): the image's, and the latents' of the seeded case with the same scheduler family.
/// </summary>
public sealed class ImageToImageParityTests
{
    private static readonly string Folder = Path.Combine(FixturePaths.Root, "img2img");
    private static readonly Lazy<JsonDocument> Cases = new(() => JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "cases.json"))));

    public static TheoryData<string> CaseIds()
    {
        var data = new TheoryData<string>();
        foreach (var c in Cases.Value.RootElement.GetProperty("cases").EnumerateArray())
            data.Add(c.GetProperty("id").GetString()!);
        return data;
    }

    [Theory]
    [MemberData(nameof(CaseIds))]
    public void SeededCallsReproduceDiffusersImg2ImgImages(string caseId)
    {
        using var scope = NewDisposeScope();
        var spec = Case(caseId);
        var kind = Enum.Parse<SchedulerKind>(spec.GetProperty("scheduler").GetString()!);
        var image = LoadPng(spec);
        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(kind).WithDevice("cpu").Build();
        var reports = new List<GenerationProgress>();
        using var result = generator.Generate(spec.GetProperty("prompt").GetString()!, Options(spec, image), new SyncProgress(reports.Add));

        TensorAssert.Close(Read($"{caseId}.image"), result.ImageTensor, FixtureCases.Tolerance("seeded_pndm", "image"), $"{caseId} image");
        Assert.Equal((int)Read($"{caseId}.timesteps").shape[0], reports.Count);
        Assert.Equal(reports.Count, reports[^1].TotalSteps);
        Assert.Equal(spec.GetProperty("strength").GetDouble(), result.Parameters.DenoisingStrength);
        Assert.Contains($"Denoising strength: {spec.GetProperty("strength").GetDouble().ToString(System.Globalization.CultureInfo.InvariantCulture)}",
            result.Parameters.ToA1111Text(), StringComparison.Ordinal);
    }

    /// <summary>preprocess, the VAE sample, the noise draw and add_noise: the loop's first latents.</summary>
    [Theory]
    [MemberData(nameof(CaseIds))]
    public void PreparedLatentsMatchDiffusers(string caseId)
    {
        using var scope = NewDisposeScope();
        var spec = Case(caseId);
        var kind = Enum.Parse<SchedulerKind>(spec.GetProperty("scheduler").GetString()!);
        var expectedInit = Read($"{caseId}.init_image");
        var png = LoadPng(spec);
        var (width, height) = ImageToImage.DefaultSize(png, 2);
        TensorAssert.Identical(expectedInit, ImageToImage.Preprocess(png, width, height), "init_image");

        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(kind).WithDevice("cpu").Build();
        using var scheduler = SchedulerFactory.Create(kind, SchedulerFixture.Sd15Config());
        int steps = spec.GetProperty("steps").GetInt32();
        scheduler.SetTimesteps(steps);
        int start = ImageToImage.StartIndex(scheduler, steps, spec.GetProperty("strength").GetDouble());
        SchedulerFixture.AssertBitEqual(Read($"{caseId}.timesteps"), scheduler.Timesteps[start..], "loop timesteps");

        using var random = new Generator(spec.GetProperty("seed").GetUInt64(), CPU);
        var latents = ImageToImage.PrepareLatents(generator.Model, scheduler, expectedInit, spec.GetProperty("count").GetInt32(), start, random, ScalarType.Float32, CPU);
        var tolerance = LatentTolerance(kind);
        TensorAssert.Close(Read($"{caseId}.noisy_latents"), latents, tolerance, "noisy_latents");

        // The noise draw follows the VAE sample's draw on the same generator: bit for bit.
        using var redraw = new Generator(spec.GetProperty("seed").GetUInt64(), CPU);
        var init = Read($"{caseId}.init_latents");
        randn(new long[] { 1, init.shape[1], init.shape[2], init.shape[3] }, ScalarType.Float32, CPU, generator: redraw);
        var noise = randn(init.shape, ScalarType.Float32, CPU, generator: redraw);
        TensorAssert.Identical(Read($"{caseId}.noise"), noise, "noise");
        // add_noise on diffusers' own inputs: bit for bit.
        TensorAssert.Identical(Read($"{caseId}.noisy_latents"), scheduler.AddNoise(init, Read($"{caseId}.noise"), start), "add_noise");
    }

    /// <summary>
    /// An init image whose sides are not multiples of the VAE factor (25x19, factor 2) is resized to 24x18 with PIL's
    /// Lanczos, as diffusers' VaeImageProcessor does: the same pixels, and the size in the result.
    /// </summary>
    [Fact]
    public void ResizedInitImageHasDiffusersSizeAndPixels()
    {
        using var scope = NewDisposeScope();
        var png = LoadPng(Case("ddim_s06_odd"));
        Assert.Equal((25, 19), (png.Width, png.Height));
        var (width, height) = ImageToImage.DefaultSize(png, 2);
        Assert.Equal((24, 18), (width, height));
        TensorAssert.Identical(Read("ddim_s06_odd.init_image"), ImageToImage.Preprocess(png, width, height), "init_image");

        using var generator = StableDiffusionGenerator.FromPretrained(FixturePaths.TinyPipeline).WithScheduler(SchedulerKind.Ddim).WithDevice("cpu").Build();
        using var result = generator.Generate("x", new GenerationOptions { InitImage = png, Steps = 2, Seed = 1, Strength = 0.5 });
        Assert.Equal((24, 18), (result.Parameters.Width, result.Parameters.Height));
        Assert.Equal(new long[] { 1, 18, 24, 3 }, result.ImageTensor.shape);
    }

    /// <summary>PIL's Lanczos on random pictures: shrinking, enlarging, both at once, one side only; byte for byte.</summary>
    [Fact]
    public void PilLanczosResizesAsPil()
    {
        foreach (var resize in Cases.Value.RootElement.GetProperty("resizes").EnumerateArray())
        {
            using var scope = NewDisposeScope();
            int n = resize.GetProperty("index").GetInt32();
            var input = Read($"resize.{n}.input");
            var expected = Read($"resize.{n}.output");
            var actual = PilLanczos.Resize(input.data<byte>().ToArray(), (int)input.shape[1], (int)input.shape[0], (int)expected.shape[1], (int)expected.shape[0]);
            Assert.Equal(expected.data<byte>().ToArray(), actual);
        }
    }

    internal static GenerationOptions Options(JsonElement spec, RgbImage image) => new()
    {
        InitImage = image,
        Strength = spec.GetProperty("strength").GetDouble(),
        Steps = spec.GetProperty("steps").GetInt32(),
        GuidanceScale = spec.GetProperty("guidance").GetDouble(),
        ImageCount = spec.GetProperty("count").GetInt32(),
        Seed = spec.GetProperty("seed").GetUInt64(),
        NegativePrompt = spec.GetProperty("negative").ValueKind == JsonValueKind.Null ? null : spec.GetProperty("negative").GetString(),
        LongPrompts = LongPromptMode.Truncate,
    };

    internal static JsonElement Case(string id) =>
        Cases.Value.RootElement.GetProperty("cases").EnumerateArray().Single(c => c.GetProperty("id").GetString() == id);

    internal static Tensor Read(string name)
    {
        using var reader = SafetensorsReader.Open(Path.Combine(Folder, "expected.safetensors"));
        return reader.Read(name);
    }

    internal static RgbImage LoadPng(JsonElement spec) => LoadPng(Path.Combine(Folder, spec.GetProperty("image").GetString()!));

    internal static RgbImage LoadPng(string path)
    {
        using var image = Image.Load<Rgb24>(path);
        var pixels = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(pixels);
        return new RgbImage(image.Width, image.Height, pixels);
    }

    private static Tolerance LatentTolerance(SchedulerKind kind) => kind switch
    {
        SchedulerKind.DpmSolverMultistep => FixtureCases.Tolerance("seeded_dpmpp_h16_w24", "latents"),
        SchedulerKind.EulerAncestralDiscrete or SchedulerKind.EulerDiscrete => FixtureCases.Tolerance("seeded_euler_a_x2", "latents"),
        _ => FixtureCases.Tolerance("seeded_pndm", "latents"),
    };

    private sealed class SyncProgress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }
}
