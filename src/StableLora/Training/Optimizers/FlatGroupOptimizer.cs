using StableLora.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// The parameter bookkeeping the non-AdamW optimizers share: each group's parameters are moved into one flat float32
/// buffer (each stays the same <see cref="Parameter"/>, now a view of it), gradients are gathered into one flat tensor
/// per group, and each parameter counts the steps in which it had a gradient (a parameter without one is left alone,
/// as the reference implementations' <c>if p.grad is None: continue</c> does).
/// </summary>
internal abstract class FlatGroupOptimizer : ILoraOptimizer
{
    private readonly List<(string Name, Parameter Parameter)> _parameters;
    private bool[][]? _present;

    protected FlatGroupOptimizer(IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups, string optimizerName)
    {
        Groups = groups.Where(g => g.Count > 0).Select(g => FlatGroup.Create(g.ToList(), optimizerName)).ToList();
        _parameters = Groups.SelectMany(g => g.Parameters).ToList();
        EffectiveLearningRates = new double[Groups.Count];
    }

    public int GroupCount => Groups.Count;

    public long StepCount { get; private set; }

    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => _parameters;

    public IReadOnlyList<double> EffectiveLearningRates { get; protected set; }

    protected List<FlatGroup> Groups { get; }

    public IReadOnlyList<Tensor> Gradients()
    {
        using var scope = NewDisposeScope();
        _present = Groups.Select(g => g.Parameters.Select(p => p.Parameter.grad is not null).ToArray()).ToArray();
        return Groups.Select(g => cat(g.Parameters.Select(p => p.Parameter.grad is { } grad
                ? grad.reshape(-1)
                : zeros(p.Parameter.numel(), ScalarType.Float32, g.Buffer.device)).ToList()).MoveToOuterDisposeScope())
            .ToList();
    }

    public void Step(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor>? gradients = null)
    {
        if (learningRates.Count != Groups.Count)
            throw new ArgumentException($"{learningRates.Count} learning rates for {Groups.Count} parameter groups", nameof(learningRates));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        gradients ??= Gradients();
        var present = _present ?? Groups.Select(g => g.Parameters.Select(p => p.Parameter.grad is not null).ToArray()).ToArray();
        _present = null;
        if (gradients.Count != Groups.Count || Groups.Where((g, i) => gradients[i].numel() != g.Buffer.numel()).Any())
            throw new ArgumentException("the gradients are not the ones Gradients() returned (one flat tensor per group)", nameof(gradients));
        StepCount++;
        StepCore(learningRates, gradients, present);
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

    public abstract List<KeyValuePair<string, Tensor>> StateTensors();

    public void LoadState(long stepCount, Func<string, Tensor?> readTensor)
    {
        StepCount = stepCount;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        LoadStateCore(name => readTensor(name) ?? throw new InvalidDataException(
            $"the checkpoint has no optimizer state '{name}': it was saved by another optimizer than {GetType().Name.Replace("Optimizer", "", StringComparison.Ordinal)}"));
    }

    public virtual void Dispose()
    {
        foreach (var group in Groups)
            group.Dispose();
    }

    /// <summary>One update; <paramref name="present"/> says, per group and parameter, which parameters have a gradient.</summary>
    protected abstract void StepCore(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor> gradients, bool[][] present);

    /// <summary>Restores the state; <paramref name="read"/> throws for a missing tensor.</summary>
    protected abstract void LoadStateCore(Func<string, Tensor> read);

    /// <summary>A one-element float64 tensor holding <paramref name="value"/> (how scalars travel in checkpoints).</summary>
    protected static Tensor ScalarTensor(double value) => tensor(new[] { value }, ScalarType.Float64);

    /// <summary>The double a <see cref="ScalarTensor"/> holds.</summary>
    protected static double ReadScalar(Tensor saved) => saved.to(ScalarType.Float64).cpu().reshape(-1)[0].item<double>();

    /// <summary>One group's parameters in one flat buffer, with the offset and size of each.</summary>
    protected sealed class FlatGroup : IDisposable
    {
        private readonly long[] _offsets;

        private FlatGroup(List<(string Name, Parameter Parameter)> parameters, Tensor buffer, long[] offsets)
        {
            Parameters = parameters;
            Buffer = buffer;
            _offsets = offsets;
            Steps = new long[parameters.Count];
        }

        public List<(string Name, Parameter Parameter)> Parameters { get; }

        public Tensor Buffer { get; }

        /// <summary>Per parameter: the steps in which it had a gradient (the reference's <c>state['step']</c>).</summary>
        public long[] Steps { get; }

        public int Count => Parameters.Count;

        public static FlatGroup Create(List<(string Name, Parameter Parameter)> parameters, string optimizerName)
        {
            var first = parameters[0].Parameter;
            if (parameters.Any(p => p.Parameter.dtype != ScalarType.Float32 || p.Parameter.device_type != first.device_type
                                    || p.Parameter.device_index != first.device_index || !p.Parameter.is_contiguous()))
                throw new NotSupportedException($"{optimizerName} needs float32 LoRA parameters on one device");
            if (parameters.Select(p => p.Parameter).Distinct(ReferenceEqualityComparer.Instance).Count() != parameters.Count)
                throw new ArgumentException("a parameter appears twice", nameof(parameters));

            using var noGrad = no_grad();
            long total = parameters.Sum(p => p.Parameter.numel());
            var buffer = empty(new[] { total }, ScalarType.Float32, first.device).DetachFromDisposeScope();
            var offsets = new long[parameters.Count];
            long offset = 0;
            for (int i = 0; i < parameters.Count; i++)
            {
                var parameter = parameters[i].Parameter;
                offsets[i] = offset;
                using var slice = buffer.narrow(0, offset, parameter.numel()).view(parameter.shape);
                slice.copy_(parameter);
                parameter.set_(slice);
                offset += parameter.numel();
            }

            return new FlatGroup(parameters, buffer, offsets);
        }

        /// <summary>Parameter <paramref name="index"/>'s slice of a flat tensor of this group's size (one-dimensional).</summary>
        public Tensor Slice(Tensor flat, int index) => flat.narrow(0, _offsets[index], Parameters[index].Parameter.numel());

        /// <summary>As <see cref="Slice"/>, in the parameter's shape.</summary>
        public Tensor Shaped(Tensor flat, int index) => Slice(flat, index).view(Parameters[index].Parameter.shape);

        /// <summary>A zero tensor of the group's (flat) size, outside any dispose scope.</summary>
        public Tensor NewState() => zeros_like(Buffer).DetachFromDisposeScope();

        public void Dispose() => Buffer.Dispose();
    }
}
