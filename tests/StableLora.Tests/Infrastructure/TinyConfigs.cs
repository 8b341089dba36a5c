using StableLora.Unet;

namespace StableLora.Tests.Infrastructure;

/// <summary>Mock models smaller than the fixture, built from config with random weights.</summary>
internal static class TinyConfigs
{
    public const string UnetJson = """
        {
          "_class_name": "UNet2DConditionModel",
          "sample_size": 8,
          "in_channels": 4,
          "out_channels": 4,
          "block_out_channels": [8, 16],
          "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
          "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
          "layers_per_block": 1,
          "cross_attention_dim": 8,
          "attention_head_dim": 2,
          "norm_num_groups": 4
        }
        """;

    public static UNet2DConditionConfig Unet => UNet2DConditionConfig.FromJson(UnetJson, "tiny unet config");
}
