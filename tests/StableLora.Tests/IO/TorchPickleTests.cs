using System.IO.Compression;
using System.Text;
using StableLora.IO;
using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.IO;

public sealed class TorchPickleTests
{
    [Fact]
    public void ReadsTheFixtureLoraWrittenByTorchSave()
    {
        using var scope = NewDisposeScope();
        using var pickle = TorchPickleReader.Open(Path.Combine(FixturePaths.TinySd, "lora_weights.pt"));
        using var safetensors = SafetensorsReader.Open(Path.Combine(FixturePaths.TinySd, "lora_weights.safetensors"));
        Assert.Equal(176, pickle.Tensors.Count);
        Assert.Equal("down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight", pickle.Tensors[0].Name);
        foreach (var info in safetensors.Tensors)
            TensorAssert.Identical(safetensors.Read(info.Name), pickle.Read(info.Name), info.Name);
    }

    [Fact]
    public void WriterOutputIsATorchZipArchiveThatReadsBackIdentically()
    {
        using var scope = NewDisposeScope();
        using var temp = new TempDirectory();
        string path = temp.File("weights.pt");
        var tensors = new List<KeyValuePair<string, Tensor>>
        {
            new("z.first", randn(4, 3)),
            new("a.second", randn(2, 5).t()),
            new("m.half", randn(7).to(ScalarType.Float16)),
            new("ids", arange(10, dtype: ScalarType.Int64)),
        };
        TorchPickleWriter.Write(path, tensors);

        using (var zip = ZipFile.OpenRead(path))
        {
            var names = zip.Entries.Select(e => e.FullName).ToList();
            Assert.Contains(names, n => n.EndsWith("/data.pkl", StringComparison.Ordinal));
            Assert.Contains(names, n => n.EndsWith("/version", StringComparison.Ordinal));
            Assert.Equal(4, names.Count(n => n.Contains("/data/", StringComparison.Ordinal)));
            // No wall-clock time in the file: the same tensors give the same bytes.
            Assert.All(zip.Entries, e => Assert.Equal(new DateTime(1980, 1, 1), e.LastWriteTime.DateTime));
        }

        string again = temp.File("again.pt");
        TorchPickleWriter.Write(again, tensors);
        Assert.Equal(File.ReadAllBytes(path), File.ReadAllBytes(again));

        using var reader = TorchPickleReader.Open(path);
        Assert.Equal(tensors.Select(t => t.Key), reader.Tensors.Select(t => t.Name));
        foreach (var (name, tensor) in tensors)
            TensorAssert.Identical(tensor.contiguous(), reader.Read(name), name);
    }

    [Fact]
    public void PickleNamingOsSystemIsRefusedBeforeAnythingRuns()
    {
        using var temp = new TempDirectory();
        string marker = temp.File("pwned");
        // protocol 2: os.system("touch <marker>") via GLOBAL + REDUCE, the classic malicious checkpoint.
        var pickle = new List<byte> { 0x80, 0x02 };
        pickle.AddRange(Encoding.ASCII.GetBytes("cos\nsystem\n"));
        pickle.Add((byte)'X');
        var command = Encoding.UTF8.GetBytes($"touch {marker}");
        pickle.AddRange(BitConverter.GetBytes(command.Length));
        pickle.AddRange(command);
        pickle.Add(0x85);
        pickle.Add((byte)'R');
        pickle.Add((byte)'.');
        string path = temp.File("evil.pt");
        WriteArchive(path, pickle.ToArray());

        var error = Assert.Throws<InvalidModelFileException>(() => TorchPickleReader.Open(path));
        Assert.Contains("os.system", error.Message);
        Assert.Contains(path, error.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void TruncatedArchiveIsAClearError()
    {
        using var temp = new TempDirectory();
        string full = temp.File("full.pt");
        TorchPickleWriter.Write(full, new[] { new KeyValuePair<string, Tensor>("w", randn(64, 64)) });
        var bytes = File.ReadAllBytes(full);
        string truncated = temp.File("truncated.pt");
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        var error = Assert.Throws<InvalidModelFileException>(() =>
        {
            using var reader = TorchPickleReader.Open(truncated);
            reader.Read("w").Dispose();
        });
        Assert.Contains(truncated, error.Message);
    }

    private static void WriteArchive(string path, byte[] pickle)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var stream = zip.CreateEntry("archive/data.pkl").Open())
            stream.Write(pickle);
        using (var stream = zip.CreateEntry("archive/version").Open())
            stream.Write("3\n"u8);
    }
}
