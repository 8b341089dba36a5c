using Microsoft.Extensions.Logging.Abstractions;
using StableLora.Hub;
using StableLora.Pipeline;
using StableLora.Tests.Infrastructure;
using StableLora.Tests.SingleFile;

namespace StableLora.Tests.Hub;

/// <summary>Hub ids resolved from a Hugging Face cache laid out as huggingface_hub writes it (symlinked snapshots), with no network.</summary>
public sealed class HubCacheTests
{
    private const string Repo = "test-org/tiny-sd";

    [Fact]
    public async Task FakeCacheWithSymlinkedSnapshotResolvesByIdAndLoads()
    {
        using var temp = new TempDirectory();
        string snapshot = HubFiles.CreateCachedRepo(temp.Path, Repo, HubFiles.ReadFolder(FixturePaths.TinyPipeline));
        Assert.NotNull(new FileInfo(Path.Combine(snapshot, "unet", "diffusion_pytorch_model.safetensors")).LinkTarget);

        var resolved = await ModelLocation.ResolveAsync(Repo, CacheOnly(temp.Path), null, NullLogger.Instance, default);
        Assert.Equal(ModelSourceKind.DiffusersFolder, resolved.Kind);
        Assert.Equal(snapshot, resolved.Path);
        Assert.Equal("tiny-sd", resolved.Name);
        Assert.Equal(Repo, resolved.HubId);

        using var model = StableDiffusionModel.Load(resolved, SingleFileTests.Fp32());
        using var fixture = SingleFileTests.LoadFixture();
        Assert.Equal("tiny-sd", model.Name);
        SingleFileTests.AssertSameModels(fixture, model);
    }

    [Fact]
    public async Task RevisionsResolveThroughRefsOrAsCommits()
    {
        using var temp = new TempDirectory();
        string snapshot = HubFiles.CreateCachedRepo(temp.Path, Repo, HubFiles.ReadFolder(FixturePaths.TinyPipeline), HubFiles.Commit, "main", "v1.0");
        Assert.Equal(snapshot, (await ModelLocation.ResolveAsync($"{Repo}@v1.0", CacheOnly(temp.Path), null, NullLogger.Instance, default)).Path);
        Assert.Equal(snapshot, (await ModelLocation.ResolveAsync($"{Repo}@{HubFiles.Commit}", CacheOnly(temp.Path), null, NullLogger.Instance, default)).Path);
        var error = await Assert.ThrowsAsync<HubException>(() => ModelLocation.ResolveAsync($"{Repo}@dev", CacheOnly(temp.Path), null, NullLogger.Instance, default));
        Assert.Equal(HubErrorKind.NotInCache, error.Kind);
        Assert.Contains("refs/dev", error.Message);
    }

    [Fact]
    public async Task MissingFileIsNamedWithoutTouchingTheNetwork()
    {
        using var temp = new TempDirectory();
        string snapshot = HubFiles.CreateCachedRepo(temp.Path, Repo, HubFiles.ReadFolder(FixturePaths.TinyPipeline));
        File.Delete(Path.Combine(snapshot, "vae", "diffusion_pytorch_model.safetensors"));

        // Offline wins over AllowDownloads; the endpoint is a closed port that must never be asked.
        var offline = HubSettings.Resolve(new HubOptions { CacheDirectory = temp.Path, AllowDownloads = true, Offline = true, Endpoint = "http://127.0.0.1:9" }, _ => null);
        var error = await Assert.ThrowsAsync<HubException>(() => ModelLocation.ResolveAsync(Repo, offline, null, NullLogger.Instance, default));
        Assert.Equal(HubErrorKind.NotInCache, error.Kind);
        Assert.Equal("vae/diffusion_pytorch_model.safetensors", error.FileName);
        Assert.Contains("offline mode is on", error.Message);

        error = await Assert.ThrowsAsync<HubException>(() => ModelLocation.ResolveAsync(Repo, CacheOnly(temp.Path), null, NullLogger.Instance, default));
        Assert.Contains("downloads are off", error.Message);
    }

    [Fact]
    public async Task DanglingSymlinkCountsAsMissing()
    {
        using var temp = new TempDirectory();
        var files = HubFiles.ReadFolder(FixturePaths.TinyPipeline);
        HubFiles.CreateCachedRepo(temp.Path, Repo, files);
        string blob = Path.Combine(temp.Path, "models--test-org--tiny-sd", "blobs", HubFiles.Sha256(files["text_encoder/model.safetensors"]));
        File.Delete(blob);

        var error = await Assert.ThrowsAsync<HubException>(() => ModelLocation.ResolveAsync(Repo, CacheOnly(temp.Path), null, NullLogger.Instance, default));
        Assert.Equal("text_encoder/model.safetensors", error.FileName);
    }

    [Fact]
    public async Task IdNotInTheCacheSaysWhereItLooked()
    {
        using var temp = new TempDirectory();
        var error = await Assert.ThrowsAsync<HubException>(() => ModelLocation.ResolveAsync("models/sd15", CacheOnly(temp.Path), null, NullLogger.Instance, default));
        Assert.Equal(HubErrorKind.NotInCache, error.Kind);
        Assert.Contains(temp.Path, error.Message);
        Assert.Contains("models--models--sd15", error.Message);
        Assert.Contains("no folder or file named 'models/sd15'", error.Message);

        var notAnId = await Assert.ThrowsAsync<InvalidModelFileException>(() => ModelLocation.ResolveAsync("./nowhere/x", CacheOnly(temp.Path), null, NullLogger.Instance, default));
        Assert.Contains("not a Hugging Face hub id", notAnId.Message);
    }

    [Fact]
    public void GeneratorBuilderTakesHubIdsFromTheCache()
    {
        using var temp = new TempDirectory();
        HubFiles.CreateCachedRepo(temp.Path, Repo, HubFiles.ReadFolder(FixturePaths.TinyPipeline));
        using var generator = StableDiffusionGenerator.FromPretrained(Repo)
            .WithDevice("cpu")
            .WithHubOptions(new HubOptions { CacheDirectory = temp.Path, Offline = true })
            .Build();
        Assert.Equal("tiny-sd", generator.Model.Name);
        Assert.Equal(16, generator.DefaultImageSize);
    }

    [Theory]
    [InlineData("runwayml/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5", "main")]
    [InlineData("org/model.v2@refs/pr/1", "org/model.v2", "refs/pr/1")]
    [InlineData("a_b/c-d@" + HubFiles.Commit, "a_b/c-d", HubFiles.Commit)]
    public void HubIdsParse(string text, string repo, string revision)
    {
        Assert.True(HubModelId.TryParse(text, out var id));
        Assert.Equal(repo, id.RepoId);
        Assert.Equal(revision, id.Revision);
    }

    [Theory]
    [InlineData("model")]
    [InlineData("a/b/c")]
    [InlineData("./a/b")]
    [InlineData("/abs/path")]
    [InlineData("C:/models")]
    [InlineData("org/na--me")]
    [InlineData("org/name@")]
    [InlineData("org/name@../x")]
    [InlineData("-org/name")]
    public void OtherTextIsNotAHubId(string text) => Assert.False(HubModelId.TryParse(text, out _));

    [Fact]
    public void SettingsComeFromTheEnvironmentAsHuggingfaceHubReadsIt()
    {
        using var temp = new TempDirectory();
        var env = new Dictionary<string, string>
        {
            ["HF_HOME"] = temp.File("hfhome"),
            ["HF_HUB_OFFLINE"] = "yes",
            ["HF_ENDPOINT"] = "http://127.0.0.1:1234/",
        };
        var settings = HubSettings.Resolve(new HubOptions(), k => env.GetValueOrDefault(k));
        Assert.Equal(Path.Combine(temp.File("hfhome"), "hub"), settings.CacheDirectory);
        Assert.True(settings.Offline);
        Assert.Equal("http://127.0.0.1:1234", settings.Endpoint);
        Assert.Null(settings.Token);

        // The token file written by huggingface-cli login, then HF_TOKEN over it, then the option over both.
        Directory.CreateDirectory(temp.File("hfhome"));
        File.WriteAllText(Path.Combine(temp.File("hfhome"), "token"), "hf_from_file\n");
        Assert.Equal("hf_from_file", HubSettings.Resolve(new HubOptions(), k => env.GetValueOrDefault(k)).Token);
        env["HF_TOKEN"] = "hf_from_env";
        Assert.Equal("hf_from_env", HubSettings.Resolve(new HubOptions(), k => env.GetValueOrDefault(k)).Token);
        Assert.Equal("hf_option", HubSettings.Resolve(new HubOptions { Token = "hf_option" }, k => env.GetValueOrDefault(k)).Token);
        Assert.DoesNotContain("hf_option", new HubOptions { Token = "hf_option" }.ToString());

        env["HF_HUB_CACHE"] = temp.File("cache");
        env["HF_HUB_OFFLINE"] = "0";
        settings = HubSettings.Resolve(new HubOptions(), k => env.GetValueOrDefault(k));
        Assert.Equal(temp.File("cache"), settings.CacheDirectory);
        Assert.False(settings.Offline);
        Assert.False(settings.AllowDownloads);
        Assert.Equal(temp.File("options"), HubSettings.Resolve(new HubOptions { CacheDirectory = temp.File("options") }, k => env.GetValueOrDefault(k)).CacheDirectory);

        var defaults = HubSettings.Resolve(new HubOptions(), _ => null);
        Assert.Equal(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub"), defaults.CacheDirectory);
        Assert.Equal("https://huggingface.co", defaults.Endpoint);
    }

    internal static HubSettings CacheOnly(string cache) => HubSettings.Resolve(new HubOptions { CacheDirectory = cache, Offline = false }, _ => null);
}
