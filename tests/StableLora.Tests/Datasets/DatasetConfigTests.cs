using System.Text.Json.Nodes;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using StableLora.Configuration;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using StableLora.Training;

namespace StableLora.Tests.Datasets;

/// <summary>sd-scripts' dataset config (--dataset_config), TOML or JSON: what it sets, what it refuses, and a run from it.</summary>
public sealed class DatasetConfigTests
{
    private const string Toml = """
        # A character LoRA: two folders of the character, one of the class.
        [general]
        shuffle_caption = true
        caption_extension = '.txt'
        keep_tokens = 1

        [[datasets]]
        resolution = 64
        batch_size = 2
        enable_bucket = true
        min_bucket_reso = 32
        max_bucket_reso = 128
        bucket_reso_steps = 16

          [[datasets.subsets]]
          image_dir = 'char/close-ups'   # relative: from the file's folder
          num_repeats = 10
          class_tokens = "sks girl"

          [[datasets.subsets]]
          image_dir = "char/full-body"
          num_repeats = 5
          class_tokens = "sks girl, full body"

          [[datasets.subsets]]
          image_dir = 'reg'
          class_tokens = 'girl'
          is_reg = true
        """;

    [Fact]
    public void TomlAndJsonConfigsSetTheSameOptions()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("dataset.toml"), Toml);
        var defaults = new LoraTrainingOptions();
        var fromToml = DatasetConfigFile.Apply(defaults, temp.File("dataset.toml"));

        Assert.Equal(new[]
        {
            new DatasetSubset(temp.File("char/close-ups"), 10, "sks girl"),
            new DatasetSubset(temp.File("char/full-body"), 5, "sks girl, full body"),
            new DatasetSubset(temp.File("reg"), 1, "girl", IsRegularization: true),
        }, fromToml.Subsets);
        Assert.Null(fromToml.DataDirectory);
        Assert.Equal((64, 2, true, 32, 128, 16), (fromToml.Resolution, fromToml.BatchSize, fromToml.EnableBucket, fromToml.MinBucketReso, fromToml.MaxBucketReso, fromToml.BucketResoSteps));
        Assert.Equal((true, ".txt", 1, true), (fromToml.ShuffleCaption, fromToml.CaptionExtension, fromToml.KeepTokens, fromToml.UseCaptionFiles));

        var json = MiniToml.Parse(Toml, "dataset.toml").ToJsonString();
        File.WriteAllText(temp.File("dataset.json"), json);
        var fromJson = DatasetConfigFile.Apply(defaults, temp.File("dataset.json"));
        Assert.Equal(fromToml.Subsets, fromJson.Subsets);
        Assert.Equal(fromToml with { Subsets = fromJson.Subsets }, fromJson);
    }

    [Fact]
    public void TheTomlReaderReadsWhatDatasetConfigsUse()
    {
        var root = MiniToml.Parse("""
            a = "tab\there \u00e9 \"q\"" # comment
            b = 'C:\data\no escapes'
            c = [1, 2.5,
                 -3]   # an array over lines
            d.e = { f = true, g = 1_000 }
            [t]
            x = inf
            [[list]]
            y = 1
            [[list]]
            y = 2
            """, "t.toml");
        Assert.Equal("tab\there é \"q\"", root["a"]!.GetValue<string>());
        Assert.Equal(@"C:\data\no escapes", root["b"]!.GetValue<string>());
        Assert.Equal("[1,2.5,-3]", root["c"]!.ToJsonString());
        Assert.True(root["d"]!["e"]!["f"]!.GetValue<bool>());
        Assert.Equal(1000, root["d"]!["e"]!["g"]!.GetValue<long>());
        Assert.Equal(double.PositiveInfinity, root["t"]!["x"]!.GetValue<double>());
        Assert.Equal(new long[] { 1, 2 }, root["list"]!.AsArray().Select(n => n!["y"]!.GetValue<long>()));

        var error = Assert.Throws<InvalidDataException>(() => MiniToml.Parse("a = 1\nb = \"C:\\data\"\n", "bad.toml"));
        Assert.Contains("bad.toml, line 2", error.Message, StringComparison.Ordinal);
        Assert.Contains("single quotes", error.Message, StringComparison.Ordinal);
        Assert.Contains("given twice", Assert.Throws<InvalidDataException>(() => MiniToml.Parse("a = 1\na = 2", "t.toml")).Message, StringComparison.Ordinal);
        Assert.Contains("line 1", Assert.Throws<InvalidDataException>(() => MiniToml.Parse("a = bare", "t.toml")).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\ncolor_aug = true", "datasets[0].subsets[0].color_aug: sd-scripts' option is not supported")]
    [InlineData("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\nnum_repeat = 3", "datasets[0].subsets[0].num_repeat: unknown key")]
    [InlineData("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\nnum_repeats = 'ten'", "datasets[0].subsets[0].num_repeats: must be an integer")]
    [InlineData("[[datasets]]\nimage_dir = 'x'\n[[datasets.subsets]]\nimage_dir = 'y'", "datasets[0].image_dir: not allowed at this level")]
    [InlineData("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'y'", "2 given")]
    [InlineData("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\nshuffle_caption = true\n[[datasets.subsets]]\nimage_dir = 'y'", "shuffle_caption: the subsets give different values")]
    [InlineData("[[datasets]]\nresolution = [512, 768]\n[[datasets.subsets]]\nimage_dir = 'x'", "square resolutions")]
    [InlineData("[general]\nresolution = 64", "[[datasets]]: none given")]
    public void MistakesAreNamedWithTheFileAndKey(string toml, string expected)
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("config.toml"), toml);
        var error = Assert.Throws<InvalidOptionsException>(() => DatasetConfigFile.Apply(new LoraTrainingOptions(), temp.File("config.toml")));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Contains("config.toml", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ACliRunFromAConfigUsesItsSubsetsRepeatsAndRegularisationImages()
    {
        using var temp = new TempDirectory();
        var random = new Random(2);
        foreach (var (dir, count) in new[] { ("char/close-ups", 2), ("char/full-body", 1), ("reg", 3) })
            for (int i = 0; i < count; i++)
                TestFiles.WriteNoise(temp.File($"{dir}/{i}.png"), 24 + 8 * i, 32, random);
        File.WriteAllText(temp.File("char/close-ups/0.txt"), "sks girl, smiling");
        File.WriteAllText(temp.File("dataset.toml"), Toml.Replace("num_repeats = 10", "num_repeats = 2").Replace("num_repeats = 5", "num_repeats = 1")
            .Replace("resolution = 64", "resolution = 32").Replace("min_bucket_reso = 32", "min_bucket_reso = 16"));

        var (code, _, error) = await CliRunner.RunAsync("train", "--model", FixturePaths.TinyPipeline, "--dataset-config", temp.File("dataset.toml"),
            "--output", temp.File("out"), "--max-epochs", "1", "--warmup-steps", "0", "--checkpoint-every", "0", "--device", "cpu", "--prior-loss-weight", "0.5");
        Assert.True(code == 0, error);
        var metadata = SafetensorsReader.ReadMetadata(temp.File("out/lora_kohya.safetensors"));
        Assert.Equal("{\"close-ups\": {\"n_repeats\": 2, \"img_count\": 2}, \"full-body\": {\"n_repeats\": 1, \"img_count\": 1}}", metadata["ss_dataset_dirs"]);
        Assert.Equal("{\"reg\": {\"n_repeats\": 1, \"img_count\": 3}}", metadata["ss_reg_dataset_dirs"]);
        Assert.Equal(("5", "3", "0.5"), (metadata["ss_num_train_images"], metadata["ss_num_reg_images"], metadata["ss_prior_loss_weight"]));
        Assert.Equal(("True", "True", "1"), (metadata["ss_enable_bucket"], metadata["ss_shuffle_caption"], metadata["ss_keep_tokens"]));
        Assert.Contains("\"smiling\": 1", metadata["ss_tag_frequency"], StringComparison.Ordinal);
    }
}
