using StableLora.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>Adafactor's hyper-parameters (transformers' defaults).</summary>
/// <param name="Eps1">Added to the squared gradient (the first of transformers' <c>eps</c> pair).</param>
/// <param name="Eps2">The smallest parameter scale (the second of the <c>eps</c> pair).</param>
/// <param name="ClipThreshold">The update's RMS is clipped to this.</param>
/// <param name="DecayRate">The second-moment decay is 1 - step^decay_rate.</param>
/// <param name="Beta1">The first-moment decay; null: no first moment.</param>
/// <param name="WeightDecay">Decoupled weight decay, scaled by the step's learning rate.</param>
/// <param name="ScaleParameter">Scale the learning rate by the parameter's RMS (at least <paramref name="Eps2"/>).</param>
/// <param name="RelativeStep">Compute the learning rate from the step number (min(1e-2, 1/sqrt(step))), ignoring the given one.</param>
/// <param name="WarmupInit">With <paramref name="RelativeStep"/>: start the relative step at 1e-6 x step.</param>
internal sealed record AdafactorSettings(
    double Eps1 = 1e-30,
    double Eps2 = 1e-3,
    double ClipThreshold = 1.0,
    double DecayRate = -0.8,
    double? Beta1 = null,
    double WeightDecay = 0.0,
    bool ScaleParameter = true,
    bool RelativeStep = true,
    bool WarmupInit = false);

/// <summary>
/// Adafactor (Shazeer and Stern 2018) with the arithmetic of transformers' <c>optimization.Adafactor</c> (v4.32):
/// factored second moments (row and column means) for parameters of two or more dimensions, a full one otherwise; the
/// update clipped to an RMS of <see cref="AdafactorSettings.ClipThreshold"/>; with relative steps the learning rate is
/// its own (the given one is ignored), which is what sd-scripts' <c>adafactor</c> schedule reports.
/// </summary>
/// <remarks>
/// Moments are per parameter (the factored ones cannot share a flat buffer). The learning rate is computed on the host
/// from each parameter's RMS, as the reference does: a float32 value when scaled by the RMS, a double otherwise.
/// </remarks>
internal sealed class AdafactorOptimizer : FlatGroupOptimizer
{
    private readonly List<Tensor?[]> _expAvg;
    private readonly List<Tensor?[]> _row;
    private readonly List<Tensor?[]> _column;
    private readonly List<Tensor?[]> _full;

    public AdafactorOptimizer(IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups, AdafactorSettings settings)
        : base(groups, "Adafactor")
    {
        if (settings.WarmupInit && !settings.RelativeStep)
            throw new ArgumentException("warmup_init needs relative_step", nameof(settings));
        Settings = settings;
        _expAvg = new();
        _row = new();
        _column = new();
        _full = new();
        foreach (var g in Groups)
        {
            var expAvg = new Tensor?[g.Count];
            var row = new Tensor?[g.Count];
            var column = new Tensor?[g.Count];
            var full = new Tensor?[g.Count];
            for (int j = 0; j < g.Count; j++)
            {
                var p = g.Parameters[j].Parameter;
                var shape = p.shape;
                if (settings.Beta1 is not null)
                    expAvg[j] = zeros_like(p).DetachFromDisposeScope();
                if (shape.Length >= 2)
                {
                    row[j] = zeros(shape[..^1], ScalarType.Float32, p.device).DetachFromDisposeScope();
                    column[j] = zeros(shape[..^2].Append(shape[^1]).ToArray(), ScalarType.Float32, p.device).DetachFromDisposeScope();
                }
                else
                {
                    full[j] = zeros_like(p).DetachFromDisposeScope();
                }
            }

            _expAvg.Add(expAvg);
            _row.Add(row);
            _column.Add(column);
            _full.Add(full);
        }
    }

    public AdafactorSettings Settings { get; }

    public override List<KeyValuePair<string, Tensor>> StateTensors()
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        for (int i = 0; i < Groups.Count; i++)
        {
            for (int j = 0; j < Groups[i].Count; j++)
            {
                string name = Groups[i].Parameters[j].Name;
                foreach (var (key, t) in new[] { ("exp_avg", _expAvg[i][j]), ("exp_avg_sq_row", _row[i][j]), ("exp_avg_sq_col", _column[i][j]), ("exp_avg_sq", _full[i][j]) })
                {
                    if (t is not null)
                        tensors.Add(new($"{name}.{key}", t));
                }

                tensors.Add(new($"{name}.step", ScalarTensor(Groups[i].Steps[j])));
            }
        }

        return tensors.OrderBy(t => t.Key, StringComparer.Ordinal).ToList();
    }

    public override void Dispose()
    {
        foreach (var t in _expAvg.Concat(_row).Concat(_column).Concat(_full).SelectMany(a => a))
            t?.Dispose();
        base.Dispose();
    }

    protected override void StepCore(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor> gradients, bool[][] present)
    {
        var effective = EffectiveLearningRates.ToArray();
        for (int i = 0; i < Groups.Count; i++)
        {
            var group = Groups[i];
            for (int j = 0; j < group.Count; j++)
            {
                if (!present[i][j])
                    continue;
                using var scope = NewDisposeScope();
                double lr = UpdateParameter(i, j, group.Shaped(group.Buffer, j), group.Shaped(gradients[i], j), learningRates[i]);
                if (j == 0)
                    effective[i] = lr;
            }
        }

        EffectiveLearningRates = effective;
    }

    protected override void LoadStateCore(Func<string, Tensor> read)
    {
        for (int i = 0; i < Groups.Count; i++)
        {
            for (int j = 0; j < Groups[i].Count; j++)
            {
                string name = Groups[i].Parameters[j].Name;
                _expAvg[i][j]?.copy_(read($"{name}.exp_avg"));
                _row[i][j]?.copy_(read($"{name}.exp_avg_sq_row"));
                _column[i][j]?.copy_(read($"{name}.exp_avg_sq_col"));
                _full[i][j]?.copy_(read($"{name}.exp_avg_sq"));
                Groups[i].Steps[j] = (long)ReadScalar(read($"{name}.step"));
            }
        }
    }

    /// <summary>The reference's <c>_rms</c>: the L2 norm over sqrt(numel), a float32 0-d tensor.</summary>
    private static Tensor Rms(Tensor t) => t.norm(2.0f).DividedBy(Math.Pow(t.numel(), 0.5));

    /// <summary>One parameter's update; returns its learning rate (the reference's <c>_get_lr</c>).</summary>
    private double UpdateParameter(int i, int j, Tensor parameter, Tensor grad, double groupLearningRate)
    {
        var settings = Settings;
        var group = Groups[i];
        long step = ++group.Steps[j];
        float rms = Rms(parameter).item<float>();

        // _get_lr: a float32 tensor (RMS x relative step) when the parameter's RMS is the scale, else a Python float.
        double relative = groupLearningRate;
        if (settings.RelativeStep)
        {
            double minStep = settings.WarmupInit ? 1e-6 * step : 1e-2;
            relative = Math.Min(minStep, 1.0 / Math.Sqrt(step));
        }

        bool scaledByRms = settings.ScaleParameter && rms > (float)settings.Eps2;
        double lr = scaledByRms ? (float)(rms * (float)relative) : (settings.ScaleParameter ? settings.Eps2 : 1.0) * relative;

        double beta2t = 1.0 - Math.Pow(step, settings.DecayRate);
        using var beta2tScalar = beta2t.ToScalar();
        using var newWeight = (1.0 - beta2t).ToScalar();
        var squared = grad.Pow(2.0).PlusInPlace(settings.Eps1);
        Tensor update;
        if (_row[i][j] is { } row && _column[i][j] is { } column)
        {
            row.mul_(beta2tScalar).add_(squared.mean(new long[] { -1 }), newWeight);
            column.mul_(beta2tScalar).add_(squared.mean(new long[] { -2 }), newWeight);
            var rowFactor = row.div(row.mean(new long[] { -1 }, keepdim: true)).rsqrt_().unsqueeze(-1);
            var columnFactor = column.unsqueeze(-2).rsqrt();
            update = rowFactor.mul(columnFactor).mul_(grad);
        }
        else
        {
            var full = _full[i][j]!;
            full.mul_(beta2tScalar).add_(squared, newWeight);
            update = full.rsqrt().mul_(grad);
        }

        using var one = 1.0.ToScalar();
        update.div_(Rms(update).DividedBy(settings.ClipThreshold).clamp_min_(one));
        using var lrScalar = lr.ToScalar();
        update.mul_(lrScalar);
        if (settings.Beta1 is { } beta1 && _expAvg[i][j] is { } expAvg)
        {
            using var beta1Scalar = beta1.ToScalar();
            using var updateWeight = (1 - beta1).ToScalar();
            expAvg.mul_(beta1Scalar).add_(update, updateWeight);
            update = expAvg;
        }

        if (settings.WeightDecay != 0)
        {
            double alpha = scaledByRms ? (float)((float)(-settings.WeightDecay) * (float)lr) : -settings.WeightDecay * lr;
            using var alphaScalar = alpha.ToScalar();
            parameter.add_(parameter, alphaScalar);
        }

        parameter.sub_(update);
        return lr;
    }
}
