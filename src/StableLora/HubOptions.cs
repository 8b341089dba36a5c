namespace StableLora;

/// <summary>
/// How a Hugging Face hub id (<c>org/name</c> or <c>org/name@revision</c>) is resolved: from the local Hugging Face
/// cache, and from the hub only when downloads are allowed. Every property left null falls back to the environment
/// variable huggingface_hub reads, so a cache filled by Python's diffusers is found without configuration.
/// </summary>
public sealed record HubOptions
{
    /// <summary>
    /// Fetch missing files from the hub. Off by default: a model is then taken only from the cache, and nothing touches
    /// the network. Turn it on to download (several GB for SD 1.5) into the cache on first use.
    /// </summary>
    public bool AllowDownloads { get; init; }

    /// <summary>Never touch the network, even when <see cref="AllowDownloads"/> is on; null reads <c>HF_HUB_OFFLINE</c> (1, true, yes or on).</summary>
    public bool? Offline { get; init; }

    /// <summary>The access token for private and gated repositories; null reads <c>HF_TOKEN</c>, then the token file of <c>huggingface-cli login</c>.</summary>
    public string? Token { get; init; }

    /// <summary>The hub's base URL; null reads <c>HF_ENDPOINT</c>, else https://huggingface.co.</summary>
    public string? Endpoint { get; init; }

    /// <summary>The hub cache folder; null reads <c>HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>Receives the progress of each file downloaded, or null.</summary>
    public IProgress<ModelDownloadProgress>? Progress { get; init; }

    /// <summary>
    /// The HTTP handler downloads go through (a proxy, <c>IHttpClientFactory</c>'s primary handler, a test double); null:
    /// StableLora's own, which follows no redirect by itself (it checks where each goes). The application keeps
    /// ownership: StableLora never disposes it. Give it <c>AllowAutoRedirect = false</c> so the hub's redirects to its CDN
    /// are followed by StableLora, which sends the token only to the hub's own host.
    /// </summary>
    public HttpMessageHandler? HttpHandler { get; init; }

    /// <inheritdoc />
    public override string ToString() =>
        $"HubOptions {{ AllowDownloads = {AllowDownloads}, Offline = {Offline?.ToString() ?? "(env)"}, Token = {(Token is null ? "(env)" : "***")}, Endpoint = {Endpoint ?? "(env)"}, CacheDirectory = {CacheDirectory ?? "(env)"} }}";
}

/// <summary>The progress of one file being downloaded from the hub.</summary>
/// <param name="RepoId">The repository (<c>org/name</c>).</param>
/// <param name="FileName">The file's path in the repository (<c>unet/diffusion_pytorch_model.safetensors</c>).</param>
/// <param name="BytesDownloaded">Bytes on disk so far, including those of an earlier, interrupted download that was resumed.</param>
/// <param name="TotalBytes">The file's size when the hub gives it, else null.</param>
public sealed record ModelDownloadProgress(string RepoId, string FileName, long BytesDownloaded, long? TotalBytes)
{
    /// <summary>True once the file is complete and verified.</summary>
    public bool Completed { get; init; }
}
