using StableLora.Tests.Infrastructure;
using static TorchSharp.torch;

namespace StableLora.Tests.Lora;

/// <summary>Files StableLora writes, read by PyTorch itself.</summary>
public sealed class PythonInteropTests
{
    [PythonTorchFact]
    public void TorchLoadReadsOurLoraWeightsPtWithTheSeedKeysAndValues()
    {
        using var temp = new TempDirectory();
        using var lora = LoraWeights.Load(Path.Combine(FixturePaths.TinySd, "lora_weights.pt"));
        string ours = temp.File("lora_weights.pt");
        lora.Save(ours, LoraFileFormat.AttnProcs);

        const string Script = """
            import sys, torch
            ours = torch.load(sys.argv[1], map_location="cpu")
            reference = torch.load(sys.argv[2], map_location="cpu")
            assert type(ours) in (dict,) or hasattr(ours, "keys"), type(ours)
            assert list(ours.keys()) == list(reference.keys()), "key order differs"
            for k in reference:
                assert ours[k].dtype == torch.float32, (k, ours[k].dtype)
                assert torch.equal(ours[k], reference[k]), k
            print(len(ours))
            """;
        string output = PythonTorch.Run(Script, ours, Path.Combine(FixturePaths.TinySd, "lora_weights.pt"));
        Assert.Equal("176", output.Trim());
    }
}
