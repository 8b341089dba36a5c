using TorchSharp.Modules;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>The EMA's settings: diffusers' <c>EMAModel</c> arguments (update_after_step 0, min_decay 0, inv_gamma 1).</summary>
/// <param name="Decay">The largest decay (<c>decay</c>).</param>
/// <param name="Warmup">diffusers' <c>use_ema_warmup</c>: 1 - (1 + step)^-power instead of (1 + step) / (10 + step).</param>
/// <param name="Power">The warm-up's power (<c>power</c>; 2/3 by default).</param>
internal sealed record EmaSettings(double Decay, bool Warmup = false, double Power = 2.0 / 3.0);

/// <summary>
/// An exponential moving average of the LoRA weights with the arithmetic of diffusers' <c>EMAModel</c> (the EMA of
/// OneTrainer and SimpleTuner): on its k-th update every shadow weight s moves towards its parameter p as
/// s -= (1 - decay_k) x (s - p), where decay_k is 0 at the first update (the shadow becomes the parameter) and then
/// min(decay, (1 + j) / (10 + j)), or min(decay, 1 - (1 + j)^-power) with warm-up, j = k - 1.
/// </summary>
internal sealed class LoraEma : IDisposable
{
    private readonly List<(string Name, Parameter Parameter, Tensor Shadow)> _entries;

    public LoraEma(IEnumerable<(string Name, Parameter Parameter)> parameters, EmaSettings settings)
    {
        Settings = settings;
        using var noGrad = no_grad();
        _entries = parameters.Select(p => (p.Name, p.Parameter, p.Parameter.detach().clone().DetachFromDisposeScope())).ToList();
    }

    public EmaSettings Settings { get; }

    /// <summary>How many updates have been made (diffusers' <c>optimization_step</c>).</summary>
    public long Updates { get; private set; }

    /// <summary>The decay of update number <paramref name="update"/> (from 1), as diffusers' <c>get_decay</c>.</summary>
    public double DecayOf(long update)
    {
        long step = Math.Max(0, update - 1);
        if (step <= 0)
            return 0.0;
        double value = Settings.Warmup ? 1 - Math.Pow(1 + step, -Settings.Power) : (1.0 + step) / (10.0 + step);
        return Math.Max(Math.Min(value, Settings.Decay), 0.0);
    }

    /// <summary>One update of every shadow weight towards its parameter.</summary>
    public void Update()
    {
        Updates++;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        double oneMinusDecay = 1 - DecayOf(Updates);
        foreach (var (_, parameter, shadow) in _entries)
            shadow.sub_((shadow - parameter).Times(oneMinusDecay));
    }

    /// <summary>The shadow weights by parameter name (for checkpoints).</summary>
    public List<KeyValuePair<string, Tensor>> StateTensors() => _entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, e.Shadow)).ToList();

    /// <summary>Restores what <see cref="StateTensors"/> gave and the update count.</summary>
    /// <exception cref="InvalidModelFileException">A shadow weight is missing.</exception>
    public void LoadState(long updates, Func<string, Tensor?> read, string source)
    {
        using var noGrad = no_grad();
        foreach (var (name, _, shadow) in _entries)
        {
            using var stored = read(name) ?? throw new InvalidModelFileException(source, "ema." + name, "the checkpoint has no EMA weight for this LoRA parameter");
            shadow.copy_(stored);
        }

        Updates = updates;
    }

    /// <summary>Runs <paramref name="action"/> with the shadow weights in the parameters, then puts the trained weights back.</summary>
    public T WithEmaWeights<T>(Func<T> action)
    {
        using var noGrad = no_grad();
        var saved = _entries.Select(e => e.Parameter.detach().clone()).ToList();
        try
        {
            foreach (var (_, parameter, shadow) in _entries)
                parameter.copy_(shadow);
            return action();
        }
        finally
        {
            for (int i = 0; i < _entries.Count; i++)
            {
                _entries[i].Parameter.copy_(saved[i]);
                saved[i].Dispose();
            }
        }
    }

    public void Dispose()
    {
        foreach (var entry in _entries)
            entry.Shadow.Dispose();
        _entries.Clear();
    }
}
