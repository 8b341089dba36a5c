namespace StableLora.IO;

/// <summary>Opens a weights file by its format: safetensors, or a PyTorch zip checkpoint (.bin, .pt, .pth, .ckpt).</summary>
internal static class TensorFiles
{
    public static ITensorReader Open(string path)
    {
        if (!File.Exists(path))
            throw new InvalidModelFileException(path, null, "the file does not exist");
        return IsSafetensors(path) ? SafetensorsReader.Open(path) : TorchPickleReader.Open(path);
    }

    public static bool IsSafetensors(string path)
    {
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            return true;
        if (path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)
            || path.EndsWith(".pth", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase))
            return false;

        // Unknown extension: a zip signature means a PyTorch checkpoint, anything else is tried as safetensors.
        try
        {
            using var stream = File.OpenRead(path);
            Span<byte> signature = stackalloc byte[4];
            return stream.ReadAtLeast(signature, 4, throwOnEndOfStream: false) < 4 || signature[0] != 0x50 || signature[1] != 0x4b;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidModelFileException(path, null, $"cannot open the file: {e.Message}", e);
        }
    }
}
