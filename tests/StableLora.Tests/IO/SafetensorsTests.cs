using StableLora.IO;
using StableLora.Tests.Infrastructure;
using TorchSharp;

namespace StableLora.Tests.IO;

public sealed class SafetensorsTests
{
    [Fact]
    public void ReadsFixtureHeaderAndTensors()
    {
        using var reader = SafetensorsReader.Open(Path.Combine(FixturePaths.TinySd, "lora_kohya.safetensors"));
        Assert.Equal(264, reader.Tensors.Count);
        Assert.Equal("4", reader.Metadata["ss_network_dim"]);
        var info = reader.Find("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lora_down.weight");
        Assert.NotNull(info);
        Assert.Equal(new long[] { 4, 32 }, info.Shape);
        using var alpha = reader.Read("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.alpha");
        Assert.Equal(0, alpha.dim());
        Assert.Equal(4.0f, alpha.item<float>());
    }

    [Fact]
    public void WriteThenReadRoundTripsTensorsAndMetadata()
    {
        using var temp = new TempDirectory();
        string path = temp.File("roundtrip.safetensors");
        var tensors = new Dictionary<string, torch.Tensor>
        {
            ["b.weight"] = torch.randn(3, 5),
            ["a.bias"] = torch.arange(7, dtype: torch.int64),
            ["half"] = torch.randn(2, 2).to(torch.float16),
            ["bf"] = torch.randn(4).to(torch.bfloat16),
            ["scalar"] = torch.tensor(2.5f),
            ["empty"] = torch.zeros(0, 3),
        };
        SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });

        Assert.Equal(0, new FileInfo(path).Length % 8);
        using var reader = SafetensorsReader.Open(path);
        Assert.Equal("pt", reader.Metadata["format"]);
        Assert.Equal(tensors.Keys, reader.Tensors.Select(t => t.Name));
        foreach (var (name, tensor) in tensors)
        {
            using var read = reader.Read(name);
            TensorAssert.Identical(tensor, read, name);
        }
    }

    [Fact]
    public void HeaderLongerThanFileIsRefusedWithFileName()
    {
        using var temp = new TempDirectory();
        string path = temp.File("bad.safetensors");
        var bytes = new byte[16];
        BitConverter.GetBytes(1_000_000UL).CopyTo(bytes, 0);
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<InvalidModelFileException>(() => SafetensorsReader.Open(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("header claims 1000000 bytes", error.Message);
    }

    [Fact]
    public void DeclaredBytesThatDisagreeWithShapeAreRefusedNamingTheKey()
    {
        using var temp = new TempDirectory();
        string path = temp.File("bad.safetensors");
        WriteRaw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", new byte[12]);
        var error = Assert.Throws<InvalidModelFileException>(() => SafetensorsReader.Open(path));
        Assert.Equal("w", error.Key);
        Assert.Contains("needs 16 bytes", error.Message);
    }

    [Fact]
    public void TruncatedDataIsRefused()
    {
        using var temp = new TempDirectory();
        string path = temp.File("bad.safetensors");
        WriteRaw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", new byte[8]);
        var error = Assert.Throws<InvalidModelFileException>(() => SafetensorsReader.Open(path));
        Assert.Contains("truncated", error.Message);
    }

    private static void WriteRaw(string path, string header, byte[] data)
    {
        var headerBytes = System.Text.Encoding.UTF8.GetBytes(header);
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((ulong)headerBytes.Length));
        stream.Write(headerBytes);
        stream.Write(data);
    }
}
