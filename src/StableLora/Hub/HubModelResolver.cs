using Microsoft.Extensions.Logging;
using StableLora.Diagnostics;

namespace StableLora.Hub;

/// <summary>
/// Turns a hub id into a snapshot folder of the Hugging Face cache holding a complete diffusers pipeline. Without
/// downloads (the default, or offline mode) only the cache is read and nothing touches the network; a missing file
/// is named. With downloads, the revision is resolved on the hub and only the files StableLora needs that the cache
/// lacks are fetched; if the hub cannot be reached, a complete cached snapshot of the revision is used instead.
/// </summary>
internal static class HubModelResolver
{
    public static async Task<string> ResolveAsync(HubModelId id, HubSettings settings, string? variant, ILogger logger,
        CancellationToken cancellationToken, HttpMessageHandler? handler = null)
    {
        var cache = new HubCache(settings.CacheDirectory, id);
        if (settings.WhyNoDownloads is { } why)
            return FromCache(cache, variant, why, logger);

        using var client = new HubClient(settings, handler);
        HubFileMetadata index;
        try
        {
            var (metadata, _) = await client.HeadAsync(id, Pipeline.ModelIndex.FileName, cancellationToken).ConfigureAwait(false);
            index = metadata ?? throw new HubException(HubErrorKind.FileNotFound, id.RepoId, id.Revision, Pipeline.ModelIndex.FileName,
                "the repository has no model_index.json, so it is not a diffusers pipeline (a single .safetensors/.ckpt checkpoint can be downloaded and named as a file)", 404);
        }
        catch (HubException e) when (e.Kind is HubErrorKind.Network or HubErrorKind.Unauthorized or HubErrorKind.AccessDenied)
        {
            // As huggingface_hub: when the hub cannot answer, a complete cached snapshot of the revision still serves.
            if (TryFromCache(cache, variant, out string folder, out _, out _))
            {
                Log.HubUsingCacheAfterError(logger, id.ToString(), folder, e.Message);
                return folder;
            }

            throw;
        }

        string commit = index.Commit;
        var downloader = new HubDownloader(client, cache, settings, logger);
        var session = new Session(id, cache, client, downloader, commit, cancellationToken);
        await session.EnsureAsync(Pipeline.ModelIndex.FileName, index).ConfigureAwait(false);
        cache.WriteRef(commit);
        foreach (string file in PipelineFiles.Required)
        {
            if (!await session.TryEnsureAsync(file).ConfigureAwait(false))
                throw new HubException(HubErrorKind.FileNotFound, id.RepoId, id.Revision, file, "the pipeline repository lacks this file", 404);
        }

        foreach (string file in PipelineFiles.Optional)
            await session.TryEnsureAsync(file).ConfigureAwait(false);

        foreach (var (component, names) in PipelineFiles.Weights)
        {
            string? found = null;
            foreach (string candidate in PipelineFiles.WeightCandidates(component, names, variant))
            {
                if (await session.TryEnsureAsync(candidate).ConfigureAwait(false))
                {
                    found = candidate;
                    break;
                }
            }

            if (found is null)
                throw new HubException(HubErrorKind.FileNotFound, id.RepoId, id.Revision, component,
                    $"the repository has no {component} weights StableLora reads (tried {string.Join(", ", PipelineFiles.WeightCandidates(component, names, variant))})", 404);
            if (PipelineFiles.IsShardIndex(found))
            {
                foreach (string shard in PipelineFiles.Shards(cache.SnapshotFile(commit, found), found))
                {
                    if (!await session.TryEnsureAsync(shard).ConfigureAwait(false))
                        throw new HubException(HubErrorKind.FileNotFound, id.RepoId, id.Revision, shard, $"the shard that {found} lists is missing", 404);
                }
            }
        }

        string snapshot = cache.SnapshotFolder(commit);
        Log.HubModelResolved(logger, id.ToString(), commit, snapshot);
        return snapshot;
    }

    private static string FromCache(HubCache cache, string? variant, string whyNoDownloads, ILogger logger)
    {
        if (TryFromCache(cache, variant, out string folder, out string problem, out string? missingFile))
        {
            Log.HubModelFromCache(logger, cache.Id.ToString(), folder);
            return folder;
        }

        throw new HubException(HubErrorKind.NotInCache, cache.Id.RepoId, cache.Id.Revision, missingFile, $"{problem}; {whyNoDownloads}");
    }

    private static bool TryFromCache(HubCache cache, string? variant, out string folder, out string problem, out string? missingFile)
    {
        folder = "";
        missingFile = null;
        if (!Directory.Exists(cache.RepoFolder))
        {
            problem = $"the model is not in the Hugging Face cache ({cache.CacheDirectory} has no {cache.Id.CacheFolderName})";
            return false;
        }

        string? commit = cache.CachedCommit();
        if (commit is null)
        {
            problem = $"the Hugging Face cache ({cache.RepoFolder}) does not know which commit revision '{cache.Id.Revision}' is (no refs/{cache.Id.Revision})";
            return false;
        }

        string snapshot = cache.SnapshotFolder(commit);
        if (!Directory.Exists(snapshot))
        {
            problem = $"the Hugging Face cache has no snapshot of commit {commit} ({snapshot})";
            return false;
        }

        var missing = PipelineFiles.FirstMissing(snapshot, variant);
        if (missing is not null)
        {
            missingFile = missing.Value.File;
            problem = $"'{missing.Value.Description}' is missing from the cached snapshot {snapshot}";
            return false;
        }

        folder = snapshot;
        problem = "";
        return true;
    }

    /// <summary>The files of one resolved commit: what the snapshot has is used as is; anything else is asked of the hub.</summary>
    private sealed class Session(HubModelId id, HubCache cache, HubClient client, HubDownloader downloader, string commit, CancellationToken cancellationToken)
    {
        /// <summary>True when the file is (now) in the snapshot; false when the repository does not have it.</summary>
        public async Task<bool> TryEnsureAsync(string file)
        {
            if (HubCache.Present(cache.SnapshotFile(commit, file)))
                return true;
            if (cache.KnownMissing(commit, file))
                return false;
            var (metadata, commitOfMissing) = await client.HeadAsync(id with { Revision = commit }, file, cancellationToken).ConfigureAwait(false);
            if (metadata is null)
            {
                cache.MarkMissing(commitOfMissing ?? commit, file);
                return false;
            }

            await downloader.DownloadAsync(commit, file, metadata, cancellationToken).ConfigureAwait(false);
            return true;
        }

        public async Task EnsureAsync(string file, HubFileMetadata metadata)
        {
            if (!HubCache.Present(cache.SnapshotFile(commit, file)))
                await downloader.DownloadAsync(commit, file, metadata, cancellationToken).ConfigureAwait(false);
        }
    }
}
