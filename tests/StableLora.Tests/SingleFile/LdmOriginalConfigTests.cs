using System.Text.Json;
using StableLora.Configuration;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.SingleFile;
using StableLora.Tests.Infrastructure;
using StableLora.TextEncoder;
using StableLora.Unet;
using StableLora.Vae;

namespace StableLora.Tests.SingleFile;

/// <summary>The original LDM inference yaml becomes the diffusers configs diffusers' converter derives from it.</summary>
public sealed class LdmOriginalConfigTests
{
    // The structure and values of CompVis' v1-inference.yaml (comments, flow and block lists, quoted strings, '1.e-6').
    private const string V1Inference = """
        model:
          base_learning_rate: 1.0e-04
          target: ldm.models.diffusion.ddpm.LatentDiffusion
          params:
            linear_start: 0.00085
            linear_end: 0.0120
            num_timesteps_cond: 1
            timesteps: 1000
            first_stage_key: "jpg"
            cond_stage_key: 'txt'
            image_size: 64
            channels: 4
            cond_stage_trainable: false   # a comment
            conditioning_key: crossattn
            scale_factor: 0.18215
            use_ema: False

            scheduler_config: # warm-up
              target: ldm.lr_scheduler.LambdaLinearScheduler
              params:
                warm_up_steps: [ 10000 ]
                f_start: [ 1.e-6 ]

            unet_config:
              target: ldm.modules.diffusionmodules.openaimodel.UNetModel
              params:
                image_size: 32 # unused
                in_channels: 4
                out_channels: 4
                model_channels: 320
                attention_resolutions: [ 4, 2, 1 ]
                num_res_blocks: 2
                channel_mult: [ 1, 2, 4, 4 ]
                num_heads: 8
                use_spatial_transformer: True
                transformer_depth: 1
                context_dim: 768
                use_checkpoint: True
                legacy: False

            first_stage_config:
              target: ldm.models.autoencoder.AutoencoderKL
              params:
                embed_dim: 4
                monitor: val/rec_loss
                ddconfig:
                  double_z: true
                  z_channels: 4
                  resolution: 256
                  in_channels: 3
                  out_ch: 3
                  ch: 128
                  ch_mult:
                  - 1
                  - 2
                  - 4
                  - 4
                  num_res_blocks: 2
                  attn_resolutions: []
                  dropout: 0.0
                lossconfig:
                  target: torch.nn.Identity

            cond_stage_config:
              target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
        """;

    [Fact]
    public void V1InferenceYamlGivesTheSd15Configs()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("v1-inference.yaml"), V1Inference);
        var configs = LdmOriginalConfig.Load(temp.File("v1-inference.yaml"));

        Assert.Equal(Describe(Sd15Presets.Unet), Describe(UNet2DConditionConfig.FromJson(configs.UnetJson, configs.UnetSource)));
        Assert.Equal(Describe(Sd15Presets.Vae), Describe(AutoencoderKLConfig.FromJson(configs.VaeJson, configs.VaeSource)));
        Assert.Equal(Describe(Sd15Presets.TextEncoder), Describe(ClipTextConfig.FromJson(configs.TextEncoderJson, configs.TextEncoderSource)));
        var scheduler = SchedulerConfig.FromJson(configs.SchedulerJson, configs.SchedulerSource);
        var preset = SchedulerConfig.FromJson(Sd15Presets.Json("scheduler"), "preset");
        // The preset (SD 1.5's file) leaves prediction_type to its default; the converter writes it.
        Assert.Equal(Describe(preset with { Source = "", PredictionType = "epsilon" }), Describe(scheduler with { Source = "" }));
        Assert.Same(TokenizerFiles.BuiltIn, configs.Tokenizer);
    }

    [Fact]
    public void ArchitectureFollowsTheYaml()
    {
        string yaml = V1Inference
            .Replace("model_channels: 320", "model_channels: 32", StringComparison.Ordinal)
            .Replace("attention_resolutions: [ 4, 2, 1 ]", "attention_resolutions: [ 2 ]", StringComparison.Ordinal)
            .Replace("channel_mult: [ 1, 2, 4, 4 ]", "channel_mult: [ 1, 2, 2 ]", StringComparison.Ordinal)
            .Replace("num_res_blocks: 2\n        channel_mult", "num_res_blocks: 1\n        channel_mult", StringComparison.Ordinal)
            .Replace("ch: 128", "ch: 32", StringComparison.Ordinal)
            .Replace("linear_end: 0.0120", "linear_end: 0.0125\n    parameterization: \"v\"", StringComparison.Ordinal)
            .Replace("scale_factor: 0.18215", "scale_factor: 0.13025", StringComparison.Ordinal);
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("small.yaml"), yaml);
        var configs = LdmOriginalConfig.Load(temp.File("small.yaml"));

        var unet = UNet2DConditionConfig.FromJson(configs.UnetJson, configs.UnetSource);
        Assert.Equal(new[] { 32, 64, 64 }, unet.BlockOutChannels);
        Assert.Equal(new[] { "DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D" }, unet.DownBlockTypes);
        Assert.Equal(new[] { "UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D" }, unet.UpBlockTypes);
        Assert.Equal(new[] { 1, 1, 1 }, unet.LayersPerBlock);
        var vae = AutoencoderKLConfig.FromJson(configs.VaeJson, configs.VaeSource);
        Assert.Equal(new[] { 32, 64, 128, 128 }, vae.BlockOutChannels);
        Assert.Equal(0.13025, vae.ScalingFactor);
        Assert.Equal(512, vae.SampleSize);
        var scheduler = SchedulerConfig.FromJson(configs.SchedulerJson, configs.SchedulerSource);
        Assert.Equal(0.0125, scheduler.BetaEnd);
        Assert.Equal("v_prediction", JsonDocument.Parse(configs.SchedulerJson).RootElement.GetProperty("prediction_type").GetString());
    }

    [Fact]
    public void Sd2YamlIsRefusedNamingTheKey()
    {
        string yaml = V1Inference.Replace("FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder", StringComparison.Ordinal);
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("v2.yaml"), yaml);
        var error = Assert.Throws<ModelConfigException>(() => LdmOriginalConfig.Load(temp.File("v2.yaml")));
        Assert.Equal("model.params.cond_stage_config.target", error.Key);
        Assert.Contains("Stable Diffusion 2.x", error.Message);
    }

    [Fact]
    public void MissingOrMalformedKeysAreNamed()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("a.yaml"), V1Inference.Replace("context_dim: 768", "context_dim: [768, x]", StringComparison.Ordinal));
        var error = Assert.Throws<ModelConfigException>(() => LdmOriginalConfig.Load(temp.File("a.yaml")));
        Assert.Equal("model.params.unet_config.params.context_dim[1]", error.Key);

        File.WriteAllText(temp.File("b.yaml"), V1Inference.Replace("        model_channels: 320\n", "", StringComparison.Ordinal));
        error = Assert.Throws<ModelConfigException>(() => LdmOriginalConfig.Load(temp.File("b.yaml")));
        Assert.Equal("model.params.unet_config.params.model_channels", error.Key);

        File.WriteAllText(temp.File("c.yaml"), "model:\n  params: &anchor\n    x: 1\n");
        var bad = Assert.Throws<InvalidModelFileException>(() => LdmOriginalConfig.Load(temp.File("c.yaml")));
        Assert.Contains("line 2", bad.Message);
    }

    [Fact]
    public void SingleFileLoaderBuildsTheModelsTheYamlDescribes()
    {
        // The tiny checkpoint is not SD 1.5-sized: the strict loader reports the shapes the yaml's architecture expects.
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("v1-inference.yaml"), V1Inference.Replace("model_channels: 320", "model_channels: 256", StringComparison.Ordinal));
        using var original = SingleFileTests.LoadFixture();
        PipelineWriter.WriteSingleFile(original, temp.File("tiny.safetensors"));
        var error = Assert.Throws<StateDictMismatchException>(() => SingleFileLoader.Load(temp.File("tiny.safetensors"),
            new SingleFileOptions { OriginalConfigFile = temp.File("v1-inference.yaml") }, SingleFileTests.Fp32()));
        Assert.Contains("[256, 4, 3, 3]", error.Message);
    }

    [Fact]
    public void YamlSubsetParsesNestedStructures()
    {
        var root = (Dictionary<string, object?>)MiniYaml.Parse("""
            # leading comment
            a:
              - x: 1
                y: [1, 2, "three, four"]
              - plain text # trailing
              - 'it''s'
            b: {}
            c: {k: v, n: [1]}
            d: |
              line one
              line two
            e: ~
            """, "test")!;
        var a = (List<object?>)root["a"]!;
        var first = (Dictionary<string, object?>)a[0]!;
        Assert.Equal("1", ((YamlScalar)first["x"]!).Text);
        Assert.Equal("three, four", ((YamlScalar)((List<object?>)first["y"]!)[2]!).Text);
        Assert.Equal("plain text", ((YamlScalar)a[1]!).Text);
        Assert.Equal("it's", ((YamlScalar)a[2]!).Text);
        Assert.Empty((Dictionary<string, object?>)root["b"]!);
        Assert.Equal("v", ((YamlScalar)((Dictionary<string, object?>)root["c"]!)["k"]!).Text);
        Assert.Equal("line one\nline two", ((YamlScalar)root["d"]!).Text);
        Assert.True(((YamlScalar)root["e"]!).IsNull);
    }

    private static string Describe(object config) => JsonSerializer.Serialize(config, config.GetType());
}
