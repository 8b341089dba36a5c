using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace StableLora.Tests.Infrastructure;

/// <summary>One request the fake hub received.</summary>
internal sealed record HubRequest(string Method, string Host, string Path, string? Range, string? Authorization);

/// <summary>
/// A Hugging Face hub on loopback (HttpListener on 127.0.0.1, free port) serving repositories under the hub's URL
/// scheme: <c>HEAD/GET /{org}/{name}/resolve/{revision}/{path}</c> with <c>X-Repo-Commit</c>, <c>ETag</c> (git blob
/// sha1) for regular files, and for LFS files a 302 to a CDN URL (<c>http://localhost:{port}/cdn/{sha256}</c>, another
/// host name for the same loopback server) with <c>X-Linked-Etag</c> and <c>X-Linked-Size</c>; ranges are honoured.
/// Errors carry the hub's <c>X-Error-Code</c>. Faults can be injected: a download cut after N bytes, corrupted
/// content, a required token.
/// </summary>
internal sealed class FakeHubServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly Dictionary<string, Dictionary<string, byte[]>> _repos = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _revisions = new(StringComparer.Ordinal) { ["main"] = HubFiles.Commit, [HubFiles.Commit] = HubFiles.Commit };

    public FakeHubServer()
    {
        for (int attempt = 0; ; attempt++)
        {
            int port = FreePort();
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
            _listener.Prefixes.Add($"http://localhost:{port}/");
            try
            {
                _listener.Start();
                Endpoint = $"http://127.0.0.1:{port}";
                CdnBase = $"http://localhost:{port}/cdn";
                break;
            }
            catch (HttpListenerException) when (attempt < 5)
            {
            }
        }

        _loop = Task.Run(LoopAsync);
    }

    public string Endpoint { get; }

    public string CdnBase { get; }

    public ConcurrentQueue<HubRequest> Requests { get; } = new();

    /// <summary>Repositories that answer 401 unless "Authorization: Bearer {token}" is sent.</summary>
    public Dictionary<string, string> Tokens { get; } = new(StringComparer.Ordinal);

    /// <summary>The next GET of these files is cut off after this many bytes (once each).</summary>
    public ConcurrentDictionary<string, long> CutOnce { get; } = new(StringComparer.Ordinal);

    /// <summary>These files are served with one byte changed (same size, announced checksum unchanged).</summary>
    public HashSet<string> Corrupt { get; } = new(StringComparer.Ordinal);

    public void AddRepo(string repoId, IReadOnlyDictionary<string, byte[]> files) => _repos[repoId] = new Dictionary<string, byte[]>(files, StringComparer.Ordinal);

    public void AddRevision(string name, string commit) => _revisions[name] = commit;

    public IReadOnlyList<HubRequest> Gets => Requests.Where(r => r.Method == "GET").ToList();

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Close();
        try
        {
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
    }

    private static int FreePort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (HttpListenerException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(() => Handle(context));
        }
    }

    private void Handle(HttpListenerContext context)
    {
        var request = context.Request;
        var response = context.Response;
        try
        {
            string[] segments = request.Url!.AbsolutePath.Split('/', StringSplitOptions.RemoveEmptyEntries).Select(Uri.UnescapeDataString).ToArray();
            Requests.Enqueue(new HubRequest(request.HttpMethod, request.Url.Host, string.Join('/', segments), request.Headers["Range"], request.Headers["Authorization"]));
            if (segments.Length == 2 && segments[0] == "cdn")
                ServeCdn(context, segments[1]);
            else if (segments.Length >= 5 && segments[2] == "resolve")
                ServeResolve(context, $"{segments[0]}/{segments[1]}", segments[3], string.Join('/', segments[4..]));
            else
                Error(response, 404, null);
        }
        catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException or InvalidOperationException)
        {
            // The client went away.
        }
    }

    private void ServeResolve(HttpListenerContext context, string repoId, string revision, string path)
    {
        var response = context.Response;
        string? authorization = context.Request.Headers["Authorization"];
        if (!_repos.TryGetValue(repoId, out var files))
        {
            Error(response, authorization is null ? 401 : 404, "RepoNotFound");
            return;
        }

        if (Tokens.TryGetValue(repoId, out var token) && authorization != $"Bearer {token}")
        {
            Error(response, 401, "RepoNotFound", authorization is null ? null : "Invalid credentials in Authorization header");
            return;
        }

        if (!_revisions.TryGetValue(revision, out var commit))
        {
            Error(response, 404, "RevisionNotFound");
            return;
        }

        response.Headers["X-Repo-Commit"] = commit;
        if (!files.TryGetValue(path, out var content))
        {
            Error(response, 404, "EntryNotFound");
            return;
        }

        if (HubFiles.IsLfs(path))
        {
            string sha = HubFiles.Sha256(content);
            response.StatusCode = 302;
            response.RedirectLocation = $"{CdnBase}/{sha}";
            response.Headers["X-Linked-Etag"] = $"\"{sha}\"";
            response.Headers["X-Linked-Size"] = content.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
            response.Headers["ETag"] = $"\"{sha}\"";
            response.ContentLength64 = 0;
            response.Close();
            return;
        }

        response.Headers["ETag"] = $"\"{HubFiles.GitSha1(content)}\"";
        SendContent(context, path, content);
    }

    private void ServeCdn(HttpListenerContext context, string sha)
    {
        foreach (var files in _repos.Values)
        {
            foreach (var (path, content) in files)
            {
                if (HubFiles.IsLfs(path) && HubFiles.Sha256(content) == sha)
                {
                    SendContent(context, path, content);
                    return;
                }
            }
        }

        Error(context.Response, 404, null);
    }

    private void SendContent(HttpListenerContext context, string path, byte[] content)
    {
        var request = context.Request;
        var response = context.Response;
        if (Corrupt.Contains(path))
        {
            content = (byte[])content.Clone();
            content[content.Length / 2] ^= 0x5A;
        }

        long start = 0;
        string? range = request.Headers["Range"];
        if (range is not null && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-')
            && long.TryParse(range["bytes=".Length..^1], out long from))
        {
            if (from >= content.Length)
            {
                Error(response, 416, null);
                return;
            }

            start = from;
            response.StatusCode = 206;
            response.Headers["Content-Range"] = $"bytes {from}-{content.Length - 1}/{content.Length}";
        }

        response.ContentLength64 = content.Length - start;
        if (request.HttpMethod == "HEAD")
        {
            response.Close();
            return;
        }

        if (CutOnce.TryRemove(path, out long cut) && cut > start)
        {
            response.OutputStream.Write(content, (int)start, (int)(cut - start));
            response.OutputStream.Flush();
            response.Abort();
            return;
        }

        response.OutputStream.Write(content, (int)start, (int)(content.Length - start));
        response.Close();
    }

    private static void Error(HttpListenerResponse response, int status, string? code, string? message = null)
    {
        response.StatusCode = status;
        if (code is not null)
            response.Headers["X-Error-Code"] = code;
        if (message is not null)
            response.Headers["X-Error-Message"] = message;
        response.ContentLength64 = 0;
        response.Close();
    }
}
