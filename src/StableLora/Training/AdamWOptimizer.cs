using TorchSharp;
using TorchSharp.Modules;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// AdamW with the arithmetic of PyTorch's single-tensor implementation (torch 1.13, the seed's optimizer), on a fixed
/// list of named parameters. Its state (step and both moments per parameter) is explicit so that checkpoints can save
/// and restore it exactly.
/// </summary>
internal sealed class AdamWOptimizer : IDisposable
{
    private readonly List<(string Name, Parameter Parameter)> _parameters;
    private readonly Dictionary<string, Moments> _state = new(StringComparer.Ordinal);

    public AdamWOptimizer(IEnumerable<(string Name, Parameter Parameter)> parameters, AdamWSettings settings)
    {
        _parameters = parameters.ToList();
        Settings = settings;
    }

    public AdamWSettings Settings { get; }

    /// <summary>How many steps have been taken (the bias-correction step count).</summary>
    public long StepCount { get; private set; }

    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => _parameters;

    /// <summary>One update of every parameter that has a gradient, at learning rate <paramref name="learningRate"/>.</summary>
    public void Step(double learningRate)
    {
        using var noGrad = no_grad();
        StepCount++;
        double beta1 = Settings.Beta1, beta2 = Settings.Beta2;
        double biasCorrection1 = 1 - Math.Pow(beta1, StepCount);
        double biasCorrection2 = 1 - Math.Pow(beta2, StepCount);
        double stepSize = learningRate / biasCorrection1;
        foreach (var (name, parameter) in _parameters)
        {
            using var scope = NewDisposeScope();
            var grad = parameter.grad;
            if (grad is null)
                continue;
            var moments = MomentsOf(name, parameter);
            using var decay = (1 - learningRate * Settings.WeightDecay).ToScalar();
            using var beta1Scalar = beta1.ToScalar();
            using var gradWeight = (1 - beta1).ToScalar();
            using var beta2Scalar = beta2.ToScalar();
            using var squareWeight = (1 - beta2).ToScalar();
            using var negativeStep = (-stepSize).ToScalar();
            parameter.mul_(decay);
            moments.ExpAvg.mul_(beta1Scalar).add_(grad, gradWeight);
            moments.ExpAvgSq.mul_(beta2Scalar).addcmul_(grad, grad, squareWeight);
            var denominator = moments.ExpAvgSq.sqrt().DividedBy(Math.Sqrt(biasCorrection2)).PlusInPlace(Settings.Eps);
            parameter.addcdiv_(moments.ExpAvg, denominator, negativeStep);
        }
    }

    public void ZeroGrad()
    {
        foreach (var (_, parameter) in _parameters)
        {
            if (parameter.grad is { } grad)
            {
                grad.Dispose();
                parameter.grad = null;
            }
        }
    }

    /// <summary>The state as named tensors (<c>&lt;param&gt;.exp_avg</c>, <c>&lt;param&gt;.exp_avg_sq</c>) for checkpoints.</summary>
    public List<KeyValuePair<string, Tensor>> StateTensors() =>
        _state.OrderBy(s => s.Key, StringComparer.Ordinal)
            .SelectMany(s => new[] { new KeyValuePair<string, Tensor>($"{s.Key}.exp_avg", s.Value.ExpAvg), new KeyValuePair<string, Tensor>($"{s.Key}.exp_avg_sq", s.Value.ExpAvgSq) })
            .ToList();

    /// <summary>Restores what <see cref="StateTensors"/> gave.</summary>
    public void LoadState(long stepCount, Func<string, Tensor?> readTensor)
    {
        StepCount = stepCount;
        using var noGrad = no_grad();
        foreach (var (name, parameter) in _parameters)
        {
            var expAvg = readTensor($"{name}.exp_avg");
            var expAvgSq = readTensor($"{name}.exp_avg_sq");
            if (expAvg is null || expAvgSq is null)
                continue;
            var moments = MomentsOf(name, parameter);
            moments.ExpAvg.copy_(expAvg);
            moments.ExpAvgSq.copy_(expAvgSq);
        }
    }

    public void Dispose()
    {
        foreach (var moments in _state.Values)
        {
            moments.ExpAvg.Dispose();
            moments.ExpAvgSq.Dispose();
        }

        _state.Clear();
    }

    private Moments MomentsOf(string name, Parameter parameter)
    {
        if (!_state.TryGetValue(name, out var moments))
        {
            moments = new Moments(zeros_like(parameter).DetachFromDisposeScope(), zeros_like(parameter).DetachFromDisposeScope());
            _state[name] = moments;
        }

        return moments;
    }

    private sealed record Moments(Tensor ExpAvg, Tensor ExpAvgSq);
}

/// <summary>AdamW's hyper-parameters; the defaults are the seed's (and diffusers' training scripts').</summary>
internal sealed record AdamWSettings(double Beta1 = 0.9, double Beta2 = 0.999, double WeightDecay = 1e-2, double Eps = 1e-8);

/// <summary>diffusers' <c>get_cosine_schedule_with_warmup</c> (one half-cosine): the learning-rate multiplier after <c>step</c> scheduler steps.</summary>
internal static class CosineWithWarmup
{
    public static double Multiplier(long step, long warmupSteps, long trainingSteps, double cycles = 0.5)
    {
        if (step < warmupSteps)
            return (double)step / Math.Max(1, warmupSteps);
        double progress = (double)(step - warmupSteps) / Math.Max(1, trainingSteps - warmupSteps);
        return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * cycles * 2.0 * progress)));
    }
}

/// <summary>torch.nn.utils.clip_grad_norm_ (L2): scales every gradient by max_norm / (total_norm + 1e-6) when total_norm exceeds max_norm.</summary>
internal static class GradientClipping
{
    public static double ClipByTotalNorm(IEnumerable<Parameter> parameters, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Cast<Tensor>().ToList();
        if (grads.Count == 0)
            return 0;
        var norms = stack(grads.Select(g => g.norm(2.0f)).ToList());
        var total = norms.norm(2.0f);
        double totalNorm = total.item<float>();
        var coefficient = total.Plus(1e-6).Divides(maxNorm);
        var clamped = coefficient.ClampMax(1.0);
        foreach (var grad in grads)
            grad.mul_(clamped.to(grad.device));
        return totalNorm;
    }
}
