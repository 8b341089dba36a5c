using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Hub;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.SingleFile;

namespace StableLora.Tests.Hub;

/// <summary>Downloads from a fake hub on loopback into the cache layout; no test reaches any other address.</summary>
public sealed class HubDownloadTests : IDisposable
{
    private const string Repo = "test-org/tiny-sd";
    private const string UnetWeights = "unet/diffusion_pytorch_model.safetensors";

    private static readonly string[] PipelineFileNames =
    {
        "model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
        UnetWeights, "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
    };

    private readonly FakeHubServer _hub = new();
    private readonly TempDirectory _cache = new();
    private readonly Dictionary<string, byte[]> _files = HubFiles.ReadFolder(FixturePaths.TinyPipeline);

    public HubDownloadTests()
    {
        var repo = new Dictionary<string, byte[]>(_files)
        {
            // Files a pipeline does not need: never fetched.
            ["safety_checker/model.safetensors"] = new byte[1000],
            ["unet/diffusion_pytorch_model.bin"] = new byte[1000],
            ["v1-5-pruned-emaonly.ckpt"] = new byte[1000],
            ["README.md"] = "# tiny"u8.ToArray(),
        };
        _hub.AddRepo(Repo, repo);
    }

    public void Dispose()
    {
        _hub.Dispose();
        _cache.Dispose();
    }

    [Fact]
    public async Task DownloadsOnlyThePipelineFilesIntoTheCacheLayoutThenLoads()
    {
        var progress = new List<ModelDownloadProgress>();
        var resolved = await Resolve(Repo, Settings(progress: new SyncProgress<ModelDownloadProgress>(progress.Add)));

        string repoFolder = Path.Combine(_cache.Path, "models--test-org--tiny-sd");
        Assert.Equal(Path.Combine(repoFolder, "snapshots", HubFiles.Commit), resolved.Path);
        Assert.Equal(HubFiles.Commit, File.ReadAllText(Path.Combine(repoFolder, "refs", "main")));
        var snapshotFiles = Directory.GetFiles(resolved.Path, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(resolved.Path, f).Replace(Path.DirectorySeparatorChar, '/')).OrderBy(f => f).ToList();
        Assert.Equal(PipelineFileNames.OrderBy(f => f), snapshotFiles);
        foreach (string file in PipelineFileNames)
        {
            // Each snapshot file is a relative symlink to its blob, named by sha256 (LFS) or git blob sha1.
            var link = new FileInfo(Path.Combine(resolved.Path, file));
            Assert.False(Path.IsPathRooted(link.LinkTarget));
            Assert.Equal(Path.Combine(repoFolder, "blobs", HubFiles.Etag(file, _files[file])), link.ResolveLinkTarget(true)!.FullName);
            Assert.Equal(_files[file], File.ReadAllBytes(link.FullName));
        }

        Assert.DoesNotContain(_hub.Requests, r => r.Path.EndsWith(".bin", StringComparison.Ordinal) || r.Path.Contains("safety_checker", StringComparison.Ordinal)
                                                   || r.Path.EndsWith(".ckpt", StringComparison.Ordinal) || r.Path.EndsWith("README.md", StringComparison.Ordinal));
        Assert.Empty(Directory.GetFiles(Path.Combine(repoFolder, "blobs"), "*.incomplete"));
        Assert.Equal(PipelineFileNames.OrderBy(f => f), progress.Where(p => p.Completed).Select(p => p.FileName).OrderBy(f => f));
        Assert.All(progress.Where(p => p.Completed), p => Assert.Equal(_files[p.FileName].Length, p.BytesDownloaded));
        Assert.All(progress.Where(p => p.Completed), p => Assert.Equal(_files[p.FileName].Length, p.TotalBytes));

        using (var model = StableDiffusionModel.Load(resolved, SingleFileTests.Fp32()))
        using (var fixture = SingleFileTests.LoadFixture())
            SingleFileTests.AssertSameModels(fixture, model);

        // Again with downloads allowed: one metadata request, nothing downloaded. Offline: no request at all.
        int before = _hub.Requests.Count;
        Assert.Equal(resolved.Path, (await Resolve(Repo, Settings())).Path);
        Assert.Equal(new[] { "HEAD" }, _hub.Requests.Skip(before).Select(r => r.Method));
        before = _hub.Requests.Count;
        Assert.Equal(resolved.Path, (await Resolve(Repo, Settings() with { Offline = true })).Path);
        Assert.Equal(before, _hub.Requests.Count);
    }

    [Fact]
    public async Task Fp16VariantIsFetchedWhereTheRepositoryHasIt()
    {
        var repo = new Dictionary<string, byte[]>(_files) { ["unet/diffusion_pytorch_model.fp16.safetensors"] = _files[UnetWeights] };
        _hub.AddRepo("test-org/with-fp16", repo);
        var resolved = await Resolve("test-org/with-fp16", Settings(), variant: "fp16");

        Assert.True(File.Exists(Path.Combine(resolved.Path, "unet", "diffusion_pytorch_model.fp16.safetensors")));
        Assert.False(File.Exists(Path.Combine(resolved.Path, "unet", "diffusion_pytorch_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(resolved.Path, "vae", "diffusion_pytorch_model.safetensors")));
        // The hub said the VAE has no fp16 file: remembered, so the next run does not ask again.
        Assert.True(File.Exists(Path.Combine(_cache.Path, "models--test-org--with-fp16", ".no_exist", HubFiles.Commit, "vae", "diffusion_pytorch_model.fp16.safetensors")));
    }

    [Fact]
    public async Task InterruptedDownloadResumesWithARangeRequest()
    {
        int size = _files[UnetWeights].Length;
        _hub.CutOnce[UnetWeights] = size / 3;

        var resolved = await Resolve(Repo, Settings());

        var unetGets = _hub.Gets.Where(r => r.Path.StartsWith("cdn/" + HubFiles.Sha256(_files[UnetWeights]), StringComparison.Ordinal)).ToList();
        Assert.Equal(2, unetGets.Count);
        Assert.Null(unetGets[0].Range);
        Assert.Equal($"bytes={size / 3}-", unetGets[1].Range);
        Assert.Equal(_files[UnetWeights], File.ReadAllBytes(Path.Combine(resolved.Path, "unet", "diffusion_pytorch_model.safetensors")));
    }

    [Fact]
    public async Task PartialFileLeftByAnEarlierRunIsResumed()
    {
        byte[] content = _files[UnetWeights];
        string blobs = Path.Combine(_cache.Path, "models--test-org--tiny-sd", "blobs");
        Directory.CreateDirectory(blobs);
        File.WriteAllBytes(Path.Combine(blobs, HubFiles.Sha256(content) + ".incomplete"), content[..3_000_000]);

        var resolved = await Resolve(Repo, Settings());

        var unetGet = Assert.Single(_hub.Gets, r => r.Path == "cdn/" + HubFiles.Sha256(content));
        Assert.Equal("bytes=3000000-", unetGet.Range);
        Assert.Equal(content, File.ReadAllBytes(Path.Combine(resolved.Path, "unet", "diffusion_pytorch_model.safetensors")));
    }

    [Fact]
    public async Task ChecksumMismatchIsRefusedAndNothingIsKept()
    {
        _hub.Corrupt.Add(UnetWeights);

        var error = await Assert.ThrowsAsync<HubException>(() => Resolve(Repo, Settings()));

        Assert.Equal(HubErrorKind.IntegrityCheckFailed, error.Kind);
        Assert.Equal(UnetWeights, error.FileName);
        Assert.Contains("sha256", error.Message);
        string blobs = Path.Combine(_cache.Path, "models--test-org--tiny-sd", "blobs");
        Assert.False(File.Exists(Path.Combine(blobs, HubFiles.Sha256(_files[UnetWeights]))));
        Assert.Empty(Directory.GetFiles(blobs, "*.incomplete"));
        Assert.False(File.Exists(Path.Combine(_cache.Path, "models--test-org--tiny-sd", "snapshots", HubFiles.Commit, "unet", "diffusion_pytorch_model.safetensors")));
    }

    [Fact]
    public async Task SmallFilesAreCheckedAgainstTheirGitBlobHash()
    {
        _hub.Corrupt.Add("unet/config.json");
        var error = await Assert.ThrowsAsync<HubException>(() => Resolve(Repo, Settings()));
        Assert.Equal(HubErrorKind.IntegrityCheckFailed, error.Kind);
        Assert.Equal("unet/config.json", error.FileName);
        Assert.Contains("git blob sha1", error.Message);
    }

    [Fact]
    public async Task NotFoundAnswersNameWhatIsMissing()
    {
        var settings = Settings() with { Token = "hf_any" };
        var repo = await Assert.ThrowsAsync<HubException>(() => Resolve("test-org/no-such-model", settings));
        Assert.Equal(HubErrorKind.RepositoryNotFound, repo.Kind);
        Assert.Equal(404, repo.StatusCode);

        var revision = await Assert.ThrowsAsync<HubException>(() => Resolve($"{Repo}@no-such-branch", settings));
        Assert.Equal(HubErrorKind.RevisionNotFound, revision.Kind);

        _hub.AddRepo("test-org/not-a-pipeline", new Dictionary<string, byte[]> { ["model.safetensors"] = new byte[8] });
        var file = await Assert.ThrowsAsync<HubException>(() => Resolve("test-org/not-a-pipeline", settings));
        Assert.Equal(HubErrorKind.FileNotFound, file.Kind);
        Assert.Equal("model_index.json", file.FileName);
        Assert.Contains("not a diffusers pipeline", file.Message);
    }

    [Fact]
    public async Task PrivateRepositoryNeedsTheTokenFromHfToken()
    {
        _hub.Tokens[Repo] = "hf_secret";

        var error = await Assert.ThrowsAsync<HubException>(() => Resolve(Repo, Settings()));
        Assert.Equal(HubErrorKind.Unauthorized, error.Kind);
        Assert.Equal(401, error.StatusCode);
        Assert.Contains("HF_TOKEN", error.Message);
        Assert.False(Directory.Exists(Path.Combine(_cache.Path, "models--test-org--tiny-sd", "snapshots")));

        var environment = new Dictionary<string, string> { ["HF_TOKEN"] = "hf_secret" };
        var settings = HubSettings.Resolve(new HubOptions { CacheDirectory = _cache.Path, Endpoint = _hub.Endpoint, AllowDownloads = true, Offline = false },
            k => environment.GetValueOrDefault(k));
        var resolved = await Resolve(Repo, settings);
        Assert.True(File.Exists(Path.Combine(resolved.Path, UnetWeights)));

        // The token goes to the hub, never to the CDN host the LFS files redirect to.
        Assert.All(_hub.Requests.Where(r => r.Path.StartsWith(Repo, StringComparison.Ordinal) && r.Authorization is not null), r => Assert.Equal("Bearer hf_secret", r.Authorization));
        Assert.Contains(_hub.Requests, r => r.Path.StartsWith(Repo, StringComparison.Ordinal) && r.Authorization is not null);
        var cdn = _hub.Requests.Where(r => r.Path.StartsWith("cdn/", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(cdn);
        Assert.All(cdn, r => Assert.Null(r.Authorization));
        Assert.All(cdn, r => Assert.Equal("localhost", r.Host));
    }

    [Fact]
    public async Task HubThatCannotBeReachedFallsBackToACompleteCachedSnapshot()
    {
        string snapshot = HubFiles.CreateCachedRepo(_cache.Path, Repo, _files);
        var unreachable = Settings() with { Endpoint = "http://127.0.0.1:9" };
        var logger = new ListLogger();
        var resolved = await ModelLocation.ResolveAsync(Repo, unreachable, null, logger, default);
        Assert.Equal(snapshot, resolved.Path);
        Assert.Contains(logger.Entries, e => e.Message.Contains("could not be asked", StringComparison.Ordinal));
    }

    [Fact]
    public void TrainingAndGenerationBuildersDownloadWhenAllowed()
    {
        using var generator = StableDiffusionGenerator.FromPretrained(Repo)
            .WithDevice("cpu")
            .WithHubOptions(new HubOptions { CacheDirectory = _cache.Path, Endpoint = _hub.Endpoint, AllowDownloads = true, Offline = false })
            .Build();
        Assert.Equal("tiny-sd", generator.Model.Name);
        Assert.StartsWith(Path.Combine(_cache.Path, "models--test-org--tiny-sd", "snapshots"), generator.Model.Source);
    }

    [Fact]
    public async Task BuildAsyncDownloadsThroughTheApplicationsHandlerAndLeavesItUsable()
    {
        using var handler = new CountingHandler(new SocketsHttpHandler { AllowAutoRedirect = false });
        using var generator = await StableDiffusionGenerator.FromPretrained(Repo)
            .WithDevice("cpu")
            .WithHubOptions(new HubOptions { CacheDirectory = _cache.Path, Endpoint = _hub.Endpoint, AllowDownloads = true, Offline = false, HttpHandler = handler })
            .BuildAsync();
        Assert.Equal("tiny-sd", generator.Model.Name);
        Assert.True(handler.Requests >= PipelineFileNames.Length, $"{handler.Requests} requests went through the application's handler");
        using var client = new HttpClient(handler, disposeHandler: false);
        // A disposed handler throws ObjectDisposedException; any HTTP answer shows it is still the application's to use.
        using var response = await client.GetAsync(_hub.Endpoint + "/");
        Assert.NotNull(response);
    }

    [Fact]
    public async Task BuildAsyncWithACancelledTokenThrowsBeforeReadingAnything()
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => StableDiffusionGenerator.FromPretrained(Repo)
            .WithHubOptions(new HubOptions { CacheDirectory = _cache.Path, Endpoint = _hub.Endpoint, AllowDownloads = true, Offline = false })
            .BuildAsync(cancelled.Token));
        Assert.Empty(_hub.Requests);
        Assert.False(Directory.Exists(Path.Combine(_cache.Path, "models--test-org--tiny-sd")));
    }

    private sealed class CountingHandler(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        private int _requests;

        public int Requests => _requests;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _requests);
            return base.SendAsync(request, cancellationToken);
        }
    }

    private HubSettings Settings(IProgress<ModelDownloadProgress>? progress = null) =>
        HubSettings.Resolve(new HubOptions { CacheDirectory = _cache.Path, Endpoint = _hub.Endpoint, AllowDownloads = true, Offline = false, Progress = progress }, _ => null);

    private static Task<ResolvedModel> Resolve(string model, HubSettings settings, string? variant = null) =>
        ModelLocation.ResolveAsync(model, settings, variant, NullLogger.Instance, default);

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value)
        {
            lock (this)
                report(value);
        }
    }
}
