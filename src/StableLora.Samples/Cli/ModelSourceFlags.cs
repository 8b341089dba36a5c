using System.CommandLine;

namespace StableLora.Samples.Cli;

/// <summary>
/// The flags that say how <c>--model</c> is read when it is not a diffusers folder: a single-file checkpoint's
/// architecture (<c>--config</c>, <c>--original-config</c>, <c>--ema</c>) and a hub id's downloads
/// (<c>--allow-download</c>, <c>--offline</c>). Shared by <c>train</c> and <c>generate</c>.
/// </summary>
internal sealed class ModelSourceFlags
{
    private readonly Option<string?> _config = Parsing.Option<string?>("--config", "For a single-file --model: a diffusers-layout folder whose config files give the architecture (default: built-in SD 1.5)");
    private readonly Option<string?> _originalConfig = Parsing.Option<string?>("--original-config", "For a single-file --model: the original LDM inference yaml (e.g. v1-inference.yaml)");
    private readonly Option<bool> _ema = Parsing.Option<bool>("--ema", "For a single-file --model: use its EMA weights (model_ema.*)");
    private readonly Option<bool> _allowDownload = Parsing.Option<bool>("--allow-download", "For a hub id --model (org/name[@revision]): download missing files into the Hugging Face cache");
    private readonly Option<bool> _offline = Parsing.Option<bool>("--offline", "Never touch the network (as HF_HUB_OFFLINE=1)");

    public IEnumerable<Option> Options => new Option[] { _config, _originalConfig, _ema, _allowDownload, _offline };

    public SingleFileOptions SingleFile(ParseResult result) => new()
    {
        ConfigDirectory = result.GetValue(_config),
        OriginalConfigFile = result.GetValue(_originalConfig),
        UseEmaWeights = result.GetValue(_ema),
    };

    public HubOptions Hub(ParseResult result)
    {
        if (result.GetValue(_allowDownload) && result.GetValue(_offline))
            throw new ArgumentException("--allow-download and --offline contradict each other");
        return new HubOptions { AllowDownloads = result.GetValue(_allowDownload), Offline = result.GetValue(_offline) ? true : null };
    }
}
