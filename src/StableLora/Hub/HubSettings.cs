namespace StableLora.Hub;

/// <summary>
/// <see cref="HubOptions"/> with every unset value taken from the environment the way huggingface_hub reads it:
/// <c>HF_HUB_CACHE</c> (or the legacy <c>HUGGINGFACE_HUB_CACHE</c>), <c>HF_HOME</c>, <c>XDG_CACHE_HOME</c>,
/// <c>HF_ENDPOINT</c>, <c>HF_HUB_OFFLINE</c> (or <c>TRANSFORMERS_OFFLINE</c>), <c>HF_TOKEN</c> (or the legacy
/// <c>HUGGING_FACE_HUB_TOKEN</c>) and the token file (<c>HF_TOKEN_PATH</c>, else <c>$HF_HOME/token</c>).
/// </summary>
internal sealed record HubSettings(string CacheDirectory, string Endpoint, string? Token, bool Offline, bool AllowDownloads,
    IProgress<ModelDownloadProgress>? Progress, HttpMessageHandler? Handler = null)
{
    public const string DefaultEndpoint = "https://huggingface.co";

    public static HubSettings Resolve(HubOptions? options) => Resolve(options ?? new HubOptions(), Environment.GetEnvironmentVariable);

    /// <summary>Resolves against <paramref name="environment"/> (a variable name to its value or null), so tests need not touch the process environment.</summary>
    public static HubSettings Resolve(HubOptions options, Func<string, string?> environment)
    {
        string? Env(string name) => environment(name) is { Length: > 0 } value ? value : null;

        string home = ExpandHome(Env("HF_HOME") ?? Path.Combine(Env("XDG_CACHE_HOME") ?? Path.Combine(UserHome(), ".cache"), "huggingface"));
        string cache = options.CacheDirectory ?? Env("HF_HUB_CACHE") ?? Env("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(home, "hub");
        string endpoint = (options.Endpoint ?? Env("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/');
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttps && uri.Scheme != Uri.UriSchemeHttp))
            throw new ArgumentException($"the hub endpoint '{endpoint}' is not an http(s) URL (HubOptions.Endpoint or HF_ENDPOINT)");
        bool offline = options.Offline ?? (IsTrue(Env("HF_HUB_OFFLINE")) || IsTrue(Env("TRANSFORMERS_OFFLINE")));
        string? token = options.Token ?? Env("HF_TOKEN") ?? Env("HUGGING_FACE_HUB_TOKEN")
            ?? ReadTokenFile(ExpandHome(Env("HF_TOKEN_PATH") ?? Path.Combine(home, "token")));
        return new HubSettings(Path.GetFullPath(ExpandHome(cache)), endpoint, string.IsNullOrWhiteSpace(token) ? null : token.Trim(), offline,
            options.AllowDownloads, options.Progress, options.HttpHandler);
    }

    /// <summary>huggingface_hub's reading of a boolean variable: 1, ON, YES or TRUE in any case.</summary>
    public static bool IsTrue(string? value) =>
        value is not null && value.Trim().ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";

    /// <summary>Why no download may happen, for messages; null when downloads may happen.</summary>
    public string? WhyNoDownloads => Offline ? "offline mode is on (HF_HUB_OFFLINE or HubOptions.Offline)"
        : !AllowDownloads ? "downloads are off (turn on HubOptions.AllowDownloads to fetch it)" : null;

    public override string ToString() =>
        $"HubSettings {{ CacheDirectory = {CacheDirectory}, Endpoint = {Endpoint}, Token = {(Token is null ? "none" : "***")}, Offline = {Offline}, AllowDownloads = {AllowDownloads} }}";

    private static string? ReadTokenFile(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string UserHome() => Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);

    private static string ExpandHome(string path) =>
        path == "~" ? UserHome()
        : path.StartsWith("~/", StringComparison.Ordinal) || path.StartsWith("~\\", StringComparison.Ordinal) ? Path.Combine(UserHome(), path[2..])
        : path;
}
