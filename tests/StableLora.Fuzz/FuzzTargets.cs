using System.IO.Compression;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Memory;
using StableLora.Data;
using StableLora.IO;

namespace StableLora.Fuzz;

/// <summary>What one input did: loaded, or refused with the documented exception (and the decoder error beneath it).</summary>
internal readonly record struct FuzzOutcome(bool Loaded, string? Refusal)
{
    public static FuzzOutcome Accepted { get; } = new(true, null);

    public override string ToString() => Loaded ? "loaded" : $"refused ({Refusal})";
}

/// <summary>An input that broke a reader's contract: an undocumented exception, or far more memory than the input justifies.</summary>
internal sealed class FuzzFindingException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The fuzzed entry points, shared by the AFL++ harness (Program), the mutation fuzzer and the test suite's replay
/// of the kept corpus. Each runs one input through a reader the way StableLora uses it. Refusals with the
/// documented exception (<see cref="InvalidModelFileException"/>, <see cref="InvalidImageException"/>) are the
/// expected outcome for broken input; any other exception escapes, which the fuzzers count as a crash.
/// </summary>
internal static class FuzzTargets
{
    public const string Safetensors = "safetensors";
    public const string Pickle = "pickle";
    public const string TorchZip = "torchzip";
    public const string Image = "image";

    public static readonly IReadOnlyList<string> Names = new[] { Safetensors, Pickle, TorchZip, Image };

    /// <summary>The pickle target's archive holds these storage records (keys "0" to "3"), 64 bytes each.</summary>
    public const int PickleRecordBytes = 64;

    private const long ManagedAllocationAllowance = 64L << 20;

    private const int ManagedAllocationPerInputByte = 64;

    /// <summary>Runs <paramref name="input"/> through <paramref name="target"/>, using <paramref name="scratchFile"/> (no extension) for the file.</summary>
    public static FuzzOutcome Run(string target, byte[] input, string scratchFile)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var outcome = target switch
        {
            Safetensors => Weights(input, scratchFile + ".safetensors", SafetensorsReader.Open),
            Pickle => Weights(PickleArchive(input), scratchFile + ".pt", TorchPickleReader.Open),
            TorchZip => Weights(input, scratchFile + ".pt", TorchPickleReader.Open),
            Image => Picture(input, scratchFile + ".png"),
            _ => throw new ArgumentException($"unknown fuzz target '{target}' (one of {string.Join(", ", Names)})", nameof(target)),
        };

        // Image pixels live in ImageSharp's unmanaged pool and are bounded by its own limits; the readers' managed
        // allocations must stay proportional to the input.
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        if (target != Image && allocated > ManagedAllocationAllowance + ManagedAllocationPerInputByte * (long)input.Length)
            throw new FuzzFindingException($"{target}: {allocated} managed bytes allocated for a {input.Length}-byte input");
        return outcome;
    }

    private static FuzzOutcome Weights(byte[] file, string path, Func<string, ITensorReader> open)
    {
        File.WriteAllBytes(path, file);
        try
        {
            using var reader = open(path);
            foreach (var info in reader.Tensors)
                reader.Read(info.Name).Dispose();
            return FuzzOutcome.Accepted;
        }
        catch (InvalidModelFileException e)
        {
            if (e.FilePath != path || !e.Message.StartsWith(path, StringComparison.Ordinal))
                throw new FuzzFindingException("the refusal does not name the file", e);
            return new FuzzOutcome(false, nameof(InvalidModelFileException));
        }
    }

    private static FuzzOutcome Picture(byte[] file, string path)
    {
        File.WriteAllBytes(path, file);
        try
        {
            using var image = ImageFiles.LoadRgb(path);
            if (image.Width <= 0 || image.Height <= 0 || (long)image.Width * image.Height > ImageFiles.MaxPixels)
                throw new FuzzFindingException($"decoded an image of {image.Width}x{image.Height}");
            return FuzzOutcome.Accepted;
        }
        catch (InvalidImageException e)
        {
            if (e.ImageName != path || !e.Message.StartsWith(path, StringComparison.Ordinal))
                throw new FuzzFindingException("the refusal does not name the file", e);
            return new FuzzOutcome(false, e.InnerException?.GetType().Name ?? nameof(InvalidImageException));
        }
    }

    /// <summary>A torch.save-style archive around a fuzzed data.pkl, with four 64-byte storage records.</summary>
    public static byte[] PickleArchive(byte[] pickle)
    {
        using var memory = new MemoryStream();
        using (var zip = new ZipArchive(memory, ZipArchiveMode.Create, leaveOpen: true))
        {
            using (var stream = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open())
                stream.Write(pickle);
            for (int key = 0; key < 4; key++)
            {
                using var stream = zip.CreateEntry($"archive/data/{key}", CompressionLevel.NoCompression).Open();
                var record = new byte[PickleRecordBytes];
                for (int i = 0; i < record.Length; i++)
                    record[i] = (byte)(i * 7 + key);
                stream.Write(record);
            }
        }

        return memory.ToArray();
    }

    /// <summary>Counts of ImageSharp's own exception types, so that a finding inside the decoder shows up in reports.</summary>
    public static bool IsDecoderDefect(string? refusal) =>
        refusal is not null && refusal != nameof(InvalidImageException) && refusal != nameof(InvalidImageContentException)
        && refusal != nameof(UnknownImageFormatException) && refusal != nameof(ImageFormatException)
        && refusal != nameof(NotSupportedException) && refusal != nameof(InvalidMemoryOperationException);
}
