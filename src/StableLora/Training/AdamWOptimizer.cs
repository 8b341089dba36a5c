using TorchSharp;
using TorchSharp.Modules;
using StableLora.Layers;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// AdamW with the arithmetic of PyTorch's single-tensor implementation (torch 1.13's torch.optim.AdamW), on a fixed
/// list of named parameters. Its state (step and both moments per parameter) is explicit so that checkpoints can save
/// and restore it exactly.
/// </summary>
/// <remarks>
/// When every parameter is a float32 tensor on one device (the LoRA case), the parameters are moved into one flat
/// buffer (each stays the same <see cref="Parameter"/> object, now a view of it) and the update runs as a handful of
/// whole-buffer operations instead of nine per parameter: the same element-wise arithmetic, a few kernels instead of
/// thousands (what <c>foreach</c>/<c>fused</c> AdamW do in PyTorch).
/// </remarks>
internal sealed class AdamWOptimizer : ILoraOptimizer
{
    private readonly List<(string Name, Parameter Parameter)> _parameters;
    private readonly List<Group> _groups;
    private readonly Dictionary<string, Moments> _state = new(StringComparer.Ordinal);

    /// <summary>One group: every parameter at the learning rate <see cref="Step(double, IReadOnlyList{Tensor}?)"/> is given.</summary>
    public AdamWOptimizer(IEnumerable<(string Name, Parameter Parameter)> parameters, AdamWSettings settings, bool flat = true)
        : this(new[] { parameters.ToList() }, settings, flat)
    {
    }

    /// <summary>Parameter groups (PyTorch's <c>param_groups</c>), each with its own learning rate at each step.</summary>
    public AdamWOptimizer(IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups, AdamWSettings settings, bool flat = true)
    {
        _groups = groups.Where(g => g.Count > 0).Select(g => new Group(g.ToList(), flat ? FlatBuffers.TryCreate(g.ToList()) : null)).ToList();
        _parameters = _groups.SelectMany(g => g.Parameters).ToList();
        Settings = settings;
    }

    public AdamWSettings Settings { get; }

    /// <summary>How many steps have been taken (the bias-correction step count).</summary>
    public long StepCount { get; private set; }

    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => _parameters;

    /// <summary>The learning rates the last step was given (AdamW has no step size of its own).</summary>
    public IReadOnlyList<double> EffectiveLearningRates { get; private set; } = Array.Empty<double>();

    /// <summary>How many parameter groups (with parameters) it has.</summary>
    public int GroupCount => _groups.Count;

    /// <summary>Whether the parameters live in flat buffers, one per group (see the remarks).</summary>
    public bool IsFlat => _groups.Count > 0 && _groups.All(g => g.Flat is not null);

    /// <summary>
    /// The gradients the next <see cref="Step(double, IReadOnlyList{Tensor}?)"/> will use: one flat tensor per group (a
    /// copy, in parameter order) when the parameters are flat and all have gradients, else each parameter's own gradient
    /// tensor. Scaling or clipping them in place changes the update.
    /// </summary>
    public IReadOnlyList<Tensor> Gradients()
    {
        if (IsFlat && _parameters.All(p => p.Parameter.grad is not null))
        {
            using var scope = NewDisposeScope();
            var flat = _groups.Select(g => cat(g.Parameters.Select(p => p.Parameter.grad!.reshape(-1)).ToList()).MoveToOuterDisposeScope()).ToList();
            return flat;
        }

        return _parameters.Select(p => p.Parameter.grad).Where(g => g is not null).Cast<Tensor>().ToList();
    }

    /// <summary>One update of every parameter that has a gradient, at learning rate <paramref name="learningRate"/> in every group.</summary>
    /// <param name="learningRate">The learning rate of this step.</param>
    /// <param name="gradients">What <see cref="Gradients"/> returned (possibly scaled or clipped since); null reads them now.</param>
    public void Step(double learningRate, IReadOnlyList<Tensor>? gradients = null) =>
        Step(Enumerable.Repeat(learningRate, _groups.Count).ToList(), gradients);

    /// <summary>One update of every parameter that has a gradient, each group at its own learning rate.</summary>
    /// <param name="learningRates">One learning rate per group, in group order.</param>
    /// <param name="gradients">What <see cref="Gradients"/> returned (possibly scaled or clipped since); null reads them now.</param>
    public void Step(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor>? gradients = null)
    {
        if (learningRates.Count != _groups.Count)
            throw new ArgumentException($"{learningRates.Count} learning rates for {_groups.Count} parameter groups", nameof(learningRates));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        gradients ??= Gradients();
        EffectiveLearningRates = learningRates.ToArray();
        StepCount++;
        double biasCorrection1 = 1 - Math.Pow(Settings.Beta1, StepCount);
        double biasCorrection2 = 1 - Math.Pow(Settings.Beta2, StepCount);
        if (IsFlat && gradients.Count == _groups.Count && _groups.Select((g, i) => gradients[i].numel() == g.Flat!.Parameters.numel()).All(fits => fits))
        {
            EnsureFlatState();
            for (int i = 0; i < _groups.Count; i++)
            {
                var flat = _groups[i].Flat!;
                Update(flat.Parameters, gradients[i], flat.ExpAvg, flat.ExpAvgSq, learningRates[i], biasCorrection1, biasCorrection2);
            }

            return;
        }

        for (int i = 0; i < _groups.Count; i++)
        {
            foreach (var (name, parameter) in _groups[i].Parameters)
            {
                using var parameterScope = NewDisposeScope();
                var grad = parameter.grad;
                if (grad is null)
                    continue;
                var moments = MomentsOf(name, parameter);
                Update(parameter, grad, moments.ExpAvg, moments.ExpAvgSq, learningRates[i], biasCorrection1, biasCorrection2);
            }
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
        foreach (var group in _groups)
            group.Flat?.Dispose();
    }

    private void Update(Tensor parameter, Tensor grad, Tensor expAvg, Tensor expAvgSq, double learningRate, double biasCorrection1, double biasCorrection2)
    {
        using var scope = NewDisposeScope();
        using var decay = (1 - learningRate * Settings.WeightDecay).ToScalar();
        using var beta1 = Settings.Beta1.ToScalar();
        using var gradWeight = (1 - Settings.Beta1).ToScalar();
        using var beta2 = Settings.Beta2.ToScalar();
        using var squareWeight = (1 - Settings.Beta2).ToScalar();
        using var negativeStep = (-learningRate / biasCorrection1).ToScalar();
        parameter.mul_(decay);
        expAvg.mul_(beta1).add_(grad, gradWeight);
        expAvgSq.mul_(beta2).addcmul_(grad, grad, squareWeight);
        var denominator = expAvgSq.sqrt().DividedBy(Math.Sqrt(biasCorrection2)).PlusInPlace(Settings.Eps);
        parameter.addcdiv_(expAvg, denominator, negativeStep);
    }

    private void EnsureFlatState()
    {
        foreach (var (name, parameter) in _parameters)
            MomentsOf(name, parameter);
    }

    private Moments MomentsOf(string name, Parameter parameter)
    {
        if (!_state.TryGetValue(name, out var moments))
        {
            var flat = _groups.First(g => g.Parameters.Any(p => ReferenceEquals(p.Parameter, parameter))).Flat;
            moments = flat is not null
                ? new Moments(flat.View(flat.ExpAvg, parameter).DetachFromDisposeScope(), flat.View(flat.ExpAvgSq, parameter).DetachFromDisposeScope())
                : new Moments(zeros_like(parameter).DetachFromDisposeScope(), zeros_like(parameter).DetachFromDisposeScope());
            _state[name] = moments;
        }

        return moments;
    }

    private sealed record Moments(Tensor ExpAvg, Tensor ExpAvgSq);

    private sealed record Group(List<(string Name, Parameter Parameter)> Parameters, FlatBuffers? Flat);

    /// <summary>One buffer for all parameters and one for each moment, with each parameter's slice.</summary>
    private sealed class FlatBuffers : IDisposable
    {
        private readonly Dictionary<Parameter, long> _offsets = new(ReferenceEqualityComparer.Instance);

        private FlatBuffers(Tensor parameters)
        {
            Parameters = parameters;
            ExpAvg = zeros_like(parameters).DetachFromDisposeScope();
            ExpAvgSq = zeros_like(parameters).DetachFromDisposeScope();
        }

        public Tensor Parameters { get; }

        public Tensor ExpAvg { get; }

        public Tensor ExpAvgSq { get; }

        public static FlatBuffers? TryCreate(List<(string Name, Parameter Parameter)> parameters)
        {
            if (parameters.Count < 1)
                return null;
            var first = parameters[0].Parameter;
            var device = first.device;
            if (parameters.Any(p => p.Parameter.dtype != ScalarType.Float32 || p.Parameter.device_type != first.device_type
                                    || p.Parameter.device_index != first.device_index || !p.Parameter.is_contiguous()))
                return null;
            if (parameters.Select(p => p.Parameter).Distinct(ReferenceEqualityComparer.Instance).Count() != parameters.Count)
                return null;

            using var noGrad = no_grad();
            long total = parameters.Sum(p => p.Parameter.numel());
            var flat = new FlatBuffers(empty(new[] { total }, ScalarType.Float32, device).DetachFromDisposeScope());
            long offset = 0;
            foreach (var (_, parameter) in parameters)
            {
                flat._offsets[parameter] = offset;
                using var slice = flat.View(flat.Parameters, parameter);
                slice.copy_(parameter);
                parameter.set_(slice);
                offset += parameter.numel();
            }

            return flat;
        }

        /// <summary>The parameter's slice of <paramref name="buffer"/>, in the parameter's shape.</summary>
        public Tensor View(Tensor buffer, Parameter parameter)
        {
            using var scope = NewDisposeScope();
            return buffer.narrow(0, _offsets[parameter], parameter.numel()).view(parameter.shape).MoveToOuterDisposeScope();
        }

        public void Dispose()
        {
            Parameters.Dispose();
            ExpAvg.Dispose();
            ExpAvgSq.Dispose();
        }
    }
}

/// <summary>AdamW's hyper-parameters; the defaults are diffusers' training scripts'.</summary>
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
    public static Tensor ClipByTotalNorm(IEnumerable<Parameter> parameters, double maxNorm) =>
        ClipByTotalNorm(parameters.Select(p => p.grad).Where(g => g is not null).Cast<Tensor>().ToList(), maxNorm);

    /// <summary>
    /// Clips <paramref name="grads"/> in place (all of one device) to a total norm of at most <paramref name="maxNorm"/>,
    /// as <c>torch.nn.utils.clip_grad_norm_</c> does, without waiting for the device; returns the total norm before
    /// clipping (a float32 tensor on the gradients' device).
    /// </summary>
    public static Tensor ClipByTotalNorm(IReadOnlyList<Tensor> grads, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (grads.Count == 0)
            return zeros(1).MoveToOuterDisposeScope();
        var total = grads.Count == 1 ? grads[0].norm(2.0f) : stack(grads.Select(g => g.norm(2.0f)).ToList()).norm(2.0f);
        var coefficient = total.Plus(1e-6).Divides(maxNorm);
        var clamped = coefficient.ClampMax(1.0);
        foreach (var grad in grads)
            grad.mul_(clamped.to(grad.device));
        return total.MoveToOuterDisposeScope();
    }
}

/// <summary>Finiteness checks of gradients and weights.</summary>
internal static class GradientChecks
{
    /// <summary>A boolean tensor on the tensors' device: whether every element of every tensor is finite (no synchronisation).</summary>
    public static Tensor AllFinite(IReadOnlyList<Tensor> tensors)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (tensors.Count == 0)
            return tensor(true).MoveToOuterDisposeScope();
        var flags = tensors.Select(t => t.isfinite().all()).ToList();
        return (flags.Count == 1 ? flags[0] : stack(flags).all()).MoveToOuterDisposeScope();
    }

    /// <summary>The names of the tensors that hold a non-finite element (one synchronisation per device).</summary>
    public static IReadOnlyList<string> NonFinite(IReadOnlyList<KeyValuePair<string, Tensor>> tensors)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (tensors.Count == 0)
            return Array.Empty<string>();
        var flags = stack(tensors.Select(t => t.Value.isfinite().all().cpu()).ToList()).data<bool>().ToArray();
        return tensors.Where((_, i) => !flags[i]).Select(t => t.Key).ToList();
    }
}
