using Microsoft.Extensions.Logging;
using StableLora.Hub;

namespace StableLora.Pipeline;

/// <summary>What a named model turned out to be.</summary>
internal enum ModelSourceKind
{
    /// <summary>A diffusers pipeline folder (a hub id resolves to one: its cache snapshot).</summary>
    DiffusersFolder,

    /// <summary>An original LDM/CompVis single-file checkpoint.</summary>
    SingleFile,
}

/// <summary>A model found on disk: where, what kind, its short name, and the hub id it was resolved from, if any.</summary>
internal sealed record ResolvedModel(ModelSourceKind Kind, string Path, string Name, string? HubId = null);

/// <summary>
/// The one place that turns what a user names as a model into files on disk: an existing folder is a diffusers
/// pipeline, an existing file a single-file checkpoint, and otherwise <c>org/name[@revision]</c> is a Hugging Face hub
/// id, resolved from the local cache (and downloaded into it only when the hub settings allow).
/// </summary>
internal static class ModelLocation
{
    public static ResolvedModel Resolve(string model, HubSettings hub, string? variant, ILogger logger, CancellationToken cancellationToken = default) =>
        Task.Run(() => ResolveAsync(model, hub, variant, logger, cancellationToken), cancellationToken).GetAwaiter().GetResult();

    public static async Task<ResolvedModel> ResolveAsync(string model, HubSettings hub, string? variant, ILogger logger,
        CancellationToken cancellationToken, HttpMessageHandler? handler = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(model);
        if (Directory.Exists(model))
            return new ResolvedModel(ModelSourceKind.DiffusersFolder, Path.GetFullPath(model), StableDiffusionModel.NameOf(model));
        if (File.Exists(model))
        {
            string full = Path.GetFullPath(model);
            return Path.GetFileName(full) == ModelIndex.FileName
                ? new ResolvedModel(ModelSourceKind.DiffusersFolder, Path.GetDirectoryName(full)!, StableDiffusionModel.NameOf(Path.GetDirectoryName(full)!))
                : new ResolvedModel(ModelSourceKind.SingleFile, full, StableDiffusionModel.NameOf(full));
        }

        if (!HubModelId.TryParse(model, out var id))
            throw new InvalidModelFileException(model, null, "no such model folder or checkpoint file, and not a Hugging Face hub id (org/name or org/name@revision)");
        try
        {
            string snapshot = await HubModelResolver.ResolveAsync(id, hub, variant, logger, cancellationToken, handler).ConfigureAwait(false);
            return new ResolvedModel(ModelSourceKind.DiffusersFolder, snapshot, id.Name, id.ToString());
        }
        catch (HubException e) when (e.Kind == HubErrorKind.NotInCache && !model.Contains('@', StringComparison.Ordinal))
        {
            throw new HubException(e.Kind, e.RepoId, e.Revision, e.FileName,
                $"{e.Detail} (and no folder or file named '{model}' exists)", e.StatusCode, e);
        }
    }
}
