using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;

namespace StableLora.Hub;

/// <summary>
/// Downloads one file of a commit into the cache as huggingface_hub does: under a lock file
/// (<c>.locks/models--org--name/&lt;etag&gt;.lock</c>) into <c>blobs/&lt;etag&gt;.incomplete</c>, resuming what an earlier
/// run left there with an HTTP <c>Range</c> request, retrying a dropped connection from where it stopped; then the size
/// and checksum are verified (the LFS sha256, or the git blob sha1, that the etag is), the blob is moved into place
/// atomically, and the snapshot path is linked to it.
/// </summary>
internal sealed class HubDownloader
{
    private const int BufferSize = 1 << 20;
    private const long ProgressEvery = 1 << 20;

    private readonly HubClient _client;
    private readonly HubCache _cache;
    private readonly HubSettings _settings;
    private readonly ILogger _logger;

    public HubDownloader(HubClient client, HubCache cache, HubSettings settings, ILogger logger)
    {
        _client = client;
        _cache = cache;
        _settings = settings;
        _logger = logger;
    }

    /// <summary>Attempts in a row that receive no data before a download is given up.</summary>
    public int MaxRetries { get; init; } = 5;

    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A read that receives nothing for this long counts as a dropped connection.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);

    private HubModelId Id => _cache.Id;

    public async Task DownloadAsync(string commit, string file, HubFileMetadata metadata, CancellationToken cancellationToken)
    {
        if (!IsSafeEtag(metadata.Etag))
            throw new HubException(HubErrorKind.Network, Id.RepoId, Id.Revision, file, $"the hub gave an etag that is not a blob id: '{metadata.Etag}'");
        string blob = _cache.BlobPath(metadata.Etag);
        string pointer = _cache.SnapshotFile(commit, file);
        string lockPath = _cache.LockPath(metadata.Etag);
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        Directory.CreateDirectory(Path.GetDirectoryName(lockPath)!);

        using (await AcquireLockAsync(lockPath, file, cancellationToken).ConfigureAwait(false))
        {
            bool newBlob = false;
            if (!File.Exists(blob))
            {
                await FetchAsync(file, metadata, blob, cancellationToken).ConfigureAwait(false);
                newBlob = true;
            }
            else
            {
                Log.HubBlobReused(_logger, Id.RepoId, file);
            }

            if (!HubCache.Present(pointer))
                _cache.Link(commit, file, metadata.Etag, newBlob);
        }
    }

    private async Task FetchAsync(string file, HubFileMetadata metadata, string blob, CancellationToken cancellationToken)
    {
        string incomplete = blob + ".incomplete";
        long have = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
        if (metadata.Size is { } expected && have > expected)
        {
            File.Delete(incomplete);
            have = 0;
        }

        if (have > 0)
            Log.HubDownloadResuming(_logger, Id.RepoId, file, have);
        else
            Log.HubDownloadStarting(_logger, Id.RepoId, file, metadata.Size ?? -1);
        Report(file, have, metadata.Size, completed: false);

        int failures = 0;
        bool rangeRefused = false;
        while (metadata.Size is null || have < metadata.Size)
        {
            long before = have;
            try
            {
                have = await FetchOnceAsync(file, metadata, incomplete, have, cancellationToken).ConfigureAwait(false);
                if (have < 0)
                {
                    // 416: what is on disk does not fit the file; start again once.
                    if (rangeRefused)
                        throw new HubException(HubErrorKind.Network, Id.RepoId, Id.Revision, file, "the server refused to resume the download (416)", 416);
                    rangeRefused = true;
                    File.Delete(incomplete);
                    have = 0;
                    continue;
                }

                if (metadata.Size is null || have >= metadata.Size)
                    break;
                throw new IOException($"the connection closed after {have} of {metadata.Size} bytes");
            }
            catch (Exception e) when (IsRetryable(e, cancellationToken))
            {
                have = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
                failures = have > before ? 1 : failures + 1;
                if (failures > MaxRetries)
                    throw e as HubException ?? new HubException(HubErrorKind.Network, Id.RepoId, Id.Revision, file,
                        $"the download failed {failures} times in a row; {have} bytes are kept in {incomplete} and the next attempt resumes from there: {e.Message}", null, e);
                Log.HubDownloadRetry(_logger, Id.RepoId, file, have, e.Message);
                await Task.Delay(RetryDelay, cancellationToken).ConfigureAwait(false);
            }
        }

        await VerifyAsync(file, metadata, incomplete, cancellationToken).ConfigureAwait(false);
        try
        {
            File.Move(incomplete, blob, overwrite: false);
        }
        catch (IOException) when (File.Exists(blob))
        {
            File.Delete(incomplete);
        }

        Report(file, new FileInfo(blob).Length, metadata.Size, completed: true);
        Log.HubFileDownloaded(_logger, Id.RepoId, file, blob);
    }

    /// <summary>One GET; returns the bytes now on disk, or -1 when the server refused the range (416).</summary>
    private async Task<long> FetchOnceAsync(string file, HubFileMetadata metadata, string incomplete, long have, CancellationToken cancellationToken)
    {
        using var response = await _client.GetAsync(Id, file, metadata.Location, have, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
            return -1;
        bool append = have > 0 && response.StatusCode == HttpStatusCode.PartialContent;
        if (have > 0 && !append)
        {
            Log.HubRangeIgnored(_logger, Id.RepoId, file);
            have = 0;
        }

        await using var output = new FileStream(incomplete, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, BufferSize, useAsync: true);
        await using var input = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var buffer = new byte[BufferSize];
        long lastReport = have;
        using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        while (true)
        {
            stall.CancelAfter(StallTimeout);
            int read = await input.ReadAsync(buffer, stall.Token).ConfigureAwait(false);
            if (read == 0)
                break;
            await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
            have += read;
            if (have - lastReport >= ProgressEvery)
            {
                Report(file, have, metadata.Size, completed: false);
                lastReport = have;
            }
        }

        await output.FlushAsync(cancellationToken).ConfigureAwait(false);
        return have;
    }

    private async Task VerifyAsync(string file, HubFileMetadata metadata, string path, CancellationToken cancellationToken)
    {
        long length = new FileInfo(path).Length;
        string? problem = null;
        if (metadata.Size is { } size && length != size)
            problem = $"it has {length} bytes where the hub announced {size}";
        else if (IsHex(metadata.Etag, 64))
        {
            await using var stream = File.OpenRead(path);
            string sha256 = Convert.ToHexString(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false)).ToLowerInvariant();
            if (sha256 != metadata.Etag.ToLowerInvariant())
                problem = $"its sha256 is {sha256} where the hub announced {metadata.Etag}";
        }
        else if (IsHex(metadata.Etag, 40))
        {
            string sha1 = await GitBlobSha1Async(path, length, cancellationToken).ConfigureAwait(false);
            if (sha1 != metadata.Etag.ToLowerInvariant())
                problem = $"its git blob sha1 is {sha1} where the hub announced {metadata.Etag}";
        }

        if (problem is null)
            return;
        File.Delete(path);
        throw new HubException(HubErrorKind.IntegrityCheckFailed, Id.RepoId, Id.Revision, file,
            $"the downloaded file is damaged ({problem}); it was deleted, try again", null);
    }

    private static async Task<string> GitBlobSha1Async(string path, long length, CancellationToken cancellationToken)
    {
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        sha1.AppendData(Encoding.ASCII.GetBytes($"blob {length}\0"));
        await using var stream = File.OpenRead(path);
        var buffer = new byte[BufferSize];
        int read;
        while ((read = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            sha1.AppendData(buffer, 0, read);
        return Convert.ToHexString(sha1.GetHashAndReset()).ToLowerInvariant();
    }

    private async Task<FileStream> AcquireLockAsync(string lockPath, string file, CancellationToken cancellationToken)
    {
        bool logged = false;
        while (true)
        {
            try
            {
                return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (File.Exists(lockPath))
            {
                if (!logged)
                    Log.HubWaitingForLock(_logger, Id.RepoId, file, lockPath);
                logged = true;
                await Task.Delay(TimeSpan.FromMilliseconds(250), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private void Report(string file, long bytes, long? total, bool completed) =>
        _settings.Progress?.Report(new ModelDownloadProgress(Id.RepoId, file, bytes, total) { Completed = completed });

    private static bool IsRetryable(Exception e, CancellationToken cancellationToken) =>
        e is HubException { Kind: HubErrorKind.Network, StatusCode: null or >= 500 or 408 or 429 }
        || (e is not HubException && HubClient.IsNetworkFailure(e, cancellationToken));

    private static bool IsSafeEtag(string etag) =>
        etag.Length is > 0 and <= 128 && etag.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_');

    private static bool IsHex(string text, int length) => text.Length == length && text.All(char.IsAsciiHexDigit);
}
