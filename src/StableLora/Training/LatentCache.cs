using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;
using StableLora.IO;
using StableLora.Vae;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// The VAE's latent distribution of each training image, encoded once (the moments: mean and log-variance, since a
/// fresh latent is sampled every step). Entries are keyed by image and flip; in memory for the run and, with a disk
/// folder, in one <c>.safetensors</c> file per image and flip that later runs reuse (kohya's <c>cache_latents_to_disk</c>).
/// </summary>
/// <remarks>
/// A disk entry holds a key over everything its latents depend on: the image file's bytes (SHA-256), the size it is
/// resized and cropped to, the flip, the preprocessing version and the VAE (its weights' fingerprint and dtype). An entry
/// whose key differs (the image was edited, the resolution or bucket changed, another VAE) or that cannot be read is
/// encoded again and overwritten; writes are atomic, so a killed run leaves whole files or none.
/// </remarks>
internal sealed class LatentCache : IDisposable
{
    private const string Format = "stablelora latent cache 1";
    private readonly Dictionary<(int Index, bool Flipped), Tensor> _memory = new();
    private readonly Dictionary<string, string> _fileHashes = new(StringComparer.Ordinal);
    private readonly DiskSettings? _disk;
    private readonly ILogger _logger;
    private bool _diskWritable = true;

    /// <param name="disk">Where and for which VAE entries live on disk; null: memory only.</param>
    /// <param name="logger">Told when the disk cannot be written.</param>
    public LatentCache(DiskSettings? disk, ILogger logger)
    {
        _disk = disk;
        _logger = logger;
    }

    /// <summary>Entries read from disk this run.</summary>
    public int Reused { get; private set; }

    /// <summary>Entries encoded this run.</summary>
    public int Encoded { get; private set; }

    /// <summary>The batch's latent distribution: each image's entry from memory or disk, the rest encoded (and stored).</summary>
    public DiagonalGaussianDistribution Moments(TrainingBatch batch, Func<Tensor, DiagonalGaussianDistribution> encode) =>
        new(StackedMoments(batch, encode));

    private Tensor StackedMoments(TrainingBatch batch, Func<Tensor, DiagonalGaussianDistribution> encode)
    {
        using var scope = NewDisposeScope();
        var missing = new List<int>();
        for (int i = 0; i < batch.Indices.Length; i++)
        {
            var key = (batch.Indices[i], batch.Flipped[i]);
            if (_memory.ContainsKey(key) || missing.Any(m => (batch.Indices[m], batch.Flipped[m]) == key))
                continue;
            if (ReadFromDisk(batch, i) is { } read)
            {
                _memory[key] = read.DetachFromDisposeScope();
                Reused++;
            }
            else
            {
                missing.Add(i);
            }
        }

        if (missing.Count > 0)
        {
            using var pixels = batch.Pixels.index_select(0, tensor(missing.Select(m => (long)m).ToArray()));
            var encoded = encode(pixels).Moments;
            for (int k = 0; k < missing.Count; k++)
            {
                int i = missing[k];
                var moments = encoded[k].clone().DetachFromDisposeScope();
                _memory[(batch.Indices[i], batch.Flipped[i])] = moments;
                Encoded++;
                WriteToDisk(batch, i, moments);
            }
        }

        return stack(batch.Indices.Select((index, i) => _memory[(index, batch.Flipped[i])]).ToList()).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        foreach (var tensor in _memory.Values)
            tensor.Dispose();
        _memory.Clear();
    }

    /// <summary>The file of an image's entry: beside the image (<c>a.png.latents.safetensors</c>) or in the cache folder, named by the image's full path.</summary>
    internal string PathOf(string imageFile, bool flipped)
    {
        string suffix = flipped ? ".latents-flipped.safetensors" : ".latents.safetensors";
        if (_disk!.Directory is null)
            return imageFile + suffix;
        string name = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(Path.GetFullPath(imageFile))))[..32].ToLowerInvariant();
        return Path.Combine(_disk.Directory, name + suffix);
    }

    /// <summary>The key an entry must carry to be used: a hash over everything its latents depend on.</summary>
    internal string KeyOf(string imageFile, string geometry, bool flipped)
    {
        if (!_fileHashes.TryGetValue(imageFile, out var fileHash))
        {
            using var stream = File.OpenRead(imageFile);
            fileHash = Convert.ToHexString(SHA256.HashData(stream));
            _fileHashes[imageFile] = fileHash;
        }

        string text = string.Join("\n", Format, fileHash, geometry, flipped ? "flipped" : "not flipped", _disk!.VaeIdentity);
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text))).ToLowerInvariant();
    }

    /// <summary>
    /// A fingerprint of a VAE: every parameter's name, shape, dtype, and float64 sum and sum of squares (a change of
    /// weights, dtype or architecture changes it; computed in one pass without copying the weights out).
    /// </summary>
    public static string VaeIdentity(AutoencoderKL vae)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var text = new StringBuilder();
        foreach (var (name, parameter) in vae.named_parameters().OrderBy(p => p.name, StringComparer.Ordinal))
        {
            var values = parameter.detach().to(float64);
            text.Append(name).Append(' ').Append(string.Join("x", parameter.shape)).Append(' ').Append(parameter.dtype)
                .Append(' ').Append(values.sum().item<double>().ToString("R", CultureInfo.InvariantCulture))
                .Append(' ').Append(values.square().sum().item<double>().ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }

        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()))).ToLowerInvariant();
    }

    private Tensor? ReadFromDisk(TrainingBatch batch, int i)
    {
        if (_disk is null || !File.Exists(batch.Names[i]))
            return null;
        string path = PathOf(batch.Names[i], batch.Flipped[i]);
        if (!File.Exists(path))
            return null;
        try
        {
            using var reader = SafetensorsReader.Open(path);
            if (!reader.Metadata.TryGetValue("key", out var stored) || stored != KeyOf(batch.Names[i], batch.Geometries[i], batch.Flipped[i]))
                return null;
            return reader.Read("moments");
        }
        catch (Exception e) when (e is StableLoraException or IOException or UnauthorizedAccessException)
        {
            // A damaged or foreign file is encoded again and overwritten.
            return null;
        }
    }

    private void WriteToDisk(TrainingBatch batch, int i, Tensor moments)
    {
        if (_disk is null || !_diskWritable || !File.Exists(batch.Names[i]))
            return;
        string path = PathOf(batch.Names[i], batch.Flipped[i]);
        try
        {
            if (Path.GetDirectoryName(path) is { Length: > 0 } folder)
                System.IO.Directory.CreateDirectory(folder);
            var metadata = new Dictionary<string, string>
            {
                ["format"] = Format,
                ["key"] = KeyOf(batch.Names[i], batch.Geometries[i], batch.Flipped[i]),
                ["image"] = Path.GetFileName(batch.Names[i]),
                ["geometry"] = batch.Geometries[i],
            };
            SafetensorsWriter.Write(path, new[] { new KeyValuePair<string, Tensor>("moments", moments) }, metadata);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _diskWritable = false;
            Log.LatentCacheNotWritten(_logger, path, e.Message);
        }
    }

    /// <summary>Where disk entries live (null: beside each image) and the VAE they were encoded with.</summary>
    internal sealed record DiskSettings(string? Directory, string VaeIdentity);
}
