using System.Net;
using System.Net.Http.Headers;

namespace StableLora.Hub;

/// <summary>What the hub says about one file of a commit (from the headers of its resolve URL).</summary>
/// <param name="Commit">The commit the revision resolved to (<c>X-Repo-Commit</c>).</param>
/// <param name="Etag">The blob's id: the LFS sha256 (<c>X-Linked-Etag</c>) or the git blob sha1 (<c>ETag</c>), unquoted.</param>
/// <param name="Size">The file's size (<c>X-Linked-Size</c>, else <c>Content-Length</c> of a non-redirect), or null.</param>
/// <param name="Location">Where to download it: the CDN URL of a redirect, else the resolve URL.</param>
internal sealed record HubFileMetadata(string Commit, string Etag, long? Size, Uri Location);

/// <summary>
/// The hub's file endpoints as huggingface_hub uses them: <c>HEAD {endpoint}/{repo}/resolve/{revision}/{path}</c>
/// (sent with <c>Accept-Encoding: identity</c>, following only relative redirects, so that the headers of an LFS
/// file's redirect to its CDN are the ones read), then <c>GET</c> of the location found, with a <c>Range</c> to resume.
/// The token goes only to the endpoint's own host, never to a CDN. HttpClient is the only network API used.
/// </summary>
internal sealed class HubClient : IDisposable
{
    private const int MaxRedirects = 10;
    private static readonly string UserAgent = $"StableLora/{typeof(HubClient).Assembly.GetName().Version?.ToString(3) ?? "0"} (.NET {Environment.Version})";

    private readonly HttpClient _http;
    private readonly HubSettings _settings;
    private readonly Uri _endpoint;

    public HubClient(HubSettings settings, HttpMessageHandler? handler = null)
    {
        _settings = settings;
        _endpoint = new Uri(settings.Endpoint + "/");
        // An application's handler (HubOptions.HttpHandler) stays the application's: it is not disposed here.
        bool owned = handler is null && settings.Handler is null;
        handler ??= settings.Handler ?? new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = TimeSpan.FromSeconds(30),
        };
        // Downloads of several GB are bounded by a stall timeout on each read instead (see HubDownloader).
        _http = new HttpClient(handler, disposeHandler: owned) { Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>How long a metadata request may take.</summary>
    public TimeSpan MetadataTimeout { get; init; } = TimeSpan.FromSeconds(30);

    public Uri ResolveUrl(HubModelId id, string file) =>
        new(_endpoint, $"{id.RepoId}/resolve/{Uri.EscapeDataString(id.Revision)}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}");

    /// <summary>The file's metadata, or null (with the commit, when the hub gives it) when the repository has no such file.</summary>
    public async Task<(HubFileMetadata? Metadata, string? CommitOfMissing)> HeadAsync(HubModelId id, string file, CancellationToken cancellationToken)
    {
        var url = ResolveUrl(id, file);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(MetadataTimeout);
        HttpResponseMessage response;
        try
        {
            for (int redirects = 0; ; redirects++)
            {
                using var request = NewRequest(HttpMethod.Head, url, resumeFrom: 0);
                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
                if (!IsRedirect(response.StatusCode) || response.Headers.Location is not { } location || location.IsAbsoluteUri || redirects == MaxRedirects)
                    break;
                response.Dispose();
                url = new Uri(url, location);
            }
        }
        catch (Exception e) when (IsNetworkFailure(e, cancellationToken))
        {
            throw new HubException(HubErrorKind.Network, id.RepoId, id.Revision, file, $"the hub at {_settings.Endpoint} could not be reached: {e.Message}", null, e);
        }

        using (response)
        {
            if ((int)response.StatusCode == 404 && ErrorCode(response) is "EntryNotFound" or null)
                return (null, Header(response, "X-Repo-Commit"));
            if (!response.IsSuccessStatusCode && !IsRedirect(response.StatusCode))
                throw Failure(response, id, file);

            string? commit = Header(response, "X-Repo-Commit");
            string? etag = NormalizeEtag(Header(response, "X-Linked-Etag") ?? Header(response, "ETag"));
            long? size = long.TryParse(Header(response, "X-Linked-Size"), out long linked) ? linked
                : IsRedirect(response.StatusCode) ? null : response.Content.Headers.ContentLength;
            if (commit is null || etag is null)
                throw new HubException(HubErrorKind.Network, id.RepoId, id.Revision, file,
                    $"the server at {_settings.Endpoint} answered without the X-Repo-Commit and ETag headers of the Hugging Face hub (a proxy or firewall in the way?)",
                    (int)response.StatusCode);
            var location = response.Headers.Location is { } target ? new Uri(url, target) : url;
            return (new HubFileMetadata(commit, etag, size, location), null);
        }
    }

    /// <summary>Starts a download (following every redirect), from byte <paramref name="resumeFrom"/> on when it is positive.</summary>
    public async Task<HttpResponseMessage> GetAsync(HubModelId id, string file, Uri url, long resumeFrom, CancellationToken cancellationToken)
    {
        try
        {
            for (int redirects = 0; ; redirects++)
            {
                using var request = NewRequest(HttpMethod.Get, url, resumeFrom);
                var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
                if (IsRedirect(response.StatusCode) && response.Headers.Location is { } location && redirects < MaxRedirects)
                {
                    response.Dispose();
                    url = new Uri(url, location);
                    continue;
                }

                if (response.IsSuccessStatusCode || response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
                    return response;
                using (response)
                    throw Failure(response, id, file);
            }
        }
        catch (Exception e) when (IsNetworkFailure(e, cancellationToken))
        {
            throw new HubException(HubErrorKind.Network, id.RepoId, id.Revision, file, $"the download from {url.GetLeftPart(UriPartial.Authority)} failed: {e.Message}", null, e);
        }
    }

    public void Dispose() => _http.Dispose();

    /// <summary>The <c>ETag</c> value as a file name: without the weak marker and quotes.</summary>
    public static string? NormalizeEtag(string? etag)
    {
        if (string.IsNullOrWhiteSpace(etag))
            return null;
        string value = etag.Trim();
        if (value.StartsWith("W/", StringComparison.Ordinal))
            value = value[2..];
        value = value.Trim('"');
        return value.Length == 0 ? null : value;
    }

    public static bool IsNetworkFailure(Exception e, CancellationToken cancellationToken) =>
        e is HttpRequestException or IOException || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested);

    private HttpRequestMessage NewRequest(HttpMethod method, Uri url, long resumeFrom)
    {
        var request = new HttpRequestMessage(method, url);
        request.Headers.UserAgent.ParseAdd(UserAgent);
        request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
        if (_settings.Token is { } token && SameOrigin(url, _endpoint))
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        if (resumeFrom > 0)
            request.Headers.Range = new RangeHeaderValue(resumeFrom, null);
        return request;
    }

    private HubException Failure(HttpResponseMessage response, HubModelId id, string file)
    {
        int status = (int)response.StatusCode;
        string? code = ErrorCode(response);
        string? serverMessage = Header(response, "X-Error-Message");
        string detail = serverMessage is null ? "" : $" (the hub says: {serverMessage})";
        bool tokenSent = _settings.Token is not null;
        return (status, code) switch
        {
            (_, "RevisionNotFound") => new HubException(HubErrorKind.RevisionNotFound, id.RepoId, id.Revision, null,
                $"the repository has no branch, tag or commit '{id.Revision}'{detail}", status),
            (_, "EntryNotFound") or (404, null) => new HubException(HubErrorKind.FileNotFound, id.RepoId, id.Revision, file,
                $"the repository has no such file{detail}", status),
            (_, "GatedRepo") => new HubException(HubErrorKind.AccessDenied, id.RepoId, id.Revision, file,
                $"this is a gated model: accept its conditions on {_settings.Endpoint}/{id.RepoId} with the account whose token is in HF_TOKEN{detail}", status),
            (401, _) when tokenSent => new HubException(HubErrorKind.Unauthorized, id.RepoId, id.Revision, file,
                $"401 Unauthorized: the token (HubOptions.Token, HF_TOKEN or the huggingface-cli login file) was refused, or the repository does not exist{detail}", status),
            (401, _) => new HubException(HubErrorKind.Unauthorized, id.RepoId, id.Revision, file,
                $"401 Unauthorized: the repository is private or gated, or does not exist; for a private or gated model set HF_TOKEN (or HubOptions.Token) to an access token{detail}", status),
            (_, "RepoNotFound") => new HubException(HubErrorKind.RepositoryNotFound, id.RepoId, id.Revision, null,
                $"the repository does not exist (or is private and the token may not read it){detail}", status),
            (403, _) => new HubException(HubErrorKind.AccessDenied, id.RepoId, id.Revision, file,
                $"403 Forbidden: the token may not read this repository{detail}", status),
            _ => new HubException(HubErrorKind.Network, id.RepoId, id.Revision, file,
                $"the hub answered {status} {response.ReasonPhrase}{detail}", status),
        };
    }

    private static bool SameOrigin(Uri a, Uri b) =>
        string.Equals(a.Scheme, b.Scheme, StringComparison.OrdinalIgnoreCase) && string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase) && a.Port == b.Port;

    private static bool IsRedirect(HttpStatusCode status) => (int)status is >= 300 and < 400;

    private static string? ErrorCode(HttpResponseMessage response) => Header(response, "X-Error-Code");

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault()
        : response.Content.Headers.TryGetValues(name, out var contentValues) ? contentValues.FirstOrDefault()
        : null;
}
