using StableLora.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>Prodigy's hyper-parameters (prodigyopt 1.1.2's defaults).</summary>
/// <param name="Beta1">Adam's first-moment decay (0: no first moment).</param>
/// <param name="Beta2">Adam's second-moment decay.</param>
/// <param name="Beta3">The decay of the step-size estimate's running sums; null: sqrt(beta2).</param>
/// <param name="Eps">Added to the denominator (times d).</param>
/// <param name="WeightDecay">Weight decay: AdamW-style (decoupled) or an L2 term added to the gradient.</param>
/// <param name="Decouple">Whether the weight decay is decoupled (AdamW-style).</param>
/// <param name="UseBiasCorrection">Adam's bias correction of the step size.</param>
/// <param name="SafeguardWarmup">Leave the learning rate out of the denominator sum (for warm-up schedules).</param>
/// <param name="D0">The initial estimate of d.</param>
/// <param name="DCoef">Multiplies the estimate of d.</param>
/// <param name="GrowthRate">The most d may grow per step (infinity: unbounded).</param>
internal sealed record ProdigySettings(
    double Beta1 = 0.9,
    double Beta2 = 0.999,
    double? Beta3 = null,
    double Eps = 1e-8,
    double WeightDecay = 0.0,
    bool Decouple = true,
    bool UseBiasCorrection = false,
    bool SafeguardWarmup = false,
    double D0 = 1e-6,
    double DCoef = 1.0,
    double GrowthRate = double.PositiveInfinity);

/// <summary>
/// Prodigy (Mishchenko and Defazio 2023) with the arithmetic of konstmish/prodigy's <c>prodigyopt/prodigy.py</c>
/// (version 1.1.2, commit 3efb213, <c>slice_p</c> 1, no FSDP): Adam whose step size d is estimated from the running
/// sums d_numerator and s, one d shared by every group, the step at d x lr.
/// </summary>
/// <remarks>
/// As in the reference, every group with a non-zero learning rate must have the same one (groups at 0 are frozen
/// except for decoupled weight decay), and the per-parameter sums (the dot product with p0 - p and |s|) are float32
/// reductions accumulated in double.
/// </remarks>
internal sealed class ProdigyOptimizer : FlatGroupOptimizer
{
    private readonly List<Tensor> _expAvg;
    private readonly List<Tensor> _expAvgSq;
    private readonly List<Tensor> _s;
    private readonly List<Tensor> _p0;

    public ProdigyOptimizer(IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups, ProdigySettings settings)
        : base(groups, "Prodigy")
    {
        Settings = settings;
        _expAvg = Groups.Select(g => g.NewState()).ToList();
        _expAvgSq = Groups.Select(g => g.NewState()).ToList();
        _s = Groups.Select(g => g.NewState()).ToList();
        _p0 = Groups.Select(g => g.NewState()).ToList();
        D = settings.D0;
        DMax = settings.D0;
    }

    public ProdigySettings Settings { get; }

    /// <summary>The current step-size estimate.</summary>
    public double D { get; private set; }

    /// <summary>The largest estimate so far.</summary>
    public double DMax { get; private set; }

    /// <summary>The running numerator sum.</summary>
    public double DNumerator { get; private set; }

    /// <summary>The reference's <c>k</c>: steps that updated the parameters.</summary>
    public long K { get; private set; }

    private double Beta3 => Settings.Beta3 ?? Math.Sqrt(Settings.Beta2);

    public override List<KeyValuePair<string, Tensor>> StateTensors()
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        for (int i = 0; i < Groups.Count; i++)
        {
            var g = Groups[i];
            for (int j = 0; j < g.Count; j++)
            {
                string name = g.Parameters[j].Name;
                tensors.Add(new($"{name}.exp_avg", g.Shaped(_expAvg[i], j)));
                tensors.Add(new($"{name}.exp_avg_sq", g.Shaped(_expAvgSq[i], j)));
                tensors.Add(new($"{name}.s", g.Slice(_s[i], j)));
                tensors.Add(new($"{name}.p0", g.Slice(_p0[i], j)));
                tensors.Add(new($"{name}.step", ScalarTensor(g.Steps[j])));
            }
        }

        tensors.Add(new("prodigy.d", ScalarTensor(D)));
        tensors.Add(new("prodigy.d_max", ScalarTensor(DMax)));
        tensors.Add(new("prodigy.d_numerator", ScalarTensor(DNumerator)));
        tensors.Add(new("prodigy.k", ScalarTensor(K)));
        return tensors.OrderBy(t => t.Key, StringComparer.Ordinal).ToList();
    }

    public override void Dispose()
    {
        foreach (var t in _expAvg.Concat(_expAvgSq).Concat(_s).Concat(_p0))
            t.Dispose();
        base.Dispose();
    }

    protected override void StepCore(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor> gradients, bool[][] present)
    {
        var settings = Settings;
        double beta1 = settings.Beta1, beta2 = settings.Beta2, beta3 = Beta3;
        double d = D, dMax = DMax, d0 = settings.D0;
        double lr = learningRates.Max();
        double biasCorrection = settings.UseBiasCorrection ? Math.Pow(1 - Math.Pow(beta2, K + 1), 0.5) / (1 - Math.Pow(beta1, K + 1)) : 1;
        double dlr = d * lr * biasCorrection;
        double dNumerator = DNumerator * beta3;
        double deltaNumerator = 0.0;
        double dDenominator = 0.0;
        EffectiveLearningRates = learningRates.Select(r => d * r).ToArray();
        foreach (double groupLr in learningRates)
        {
            if (groupLr != lr && groupLr != 0.0)
                throw new InvalidOperationException("Prodigy takes one learning rate for every parameter group (groups at 0 are frozen); this step has "
                                                    + string.Join(", ", learningRates.Select(r => r.ToString("R", System.Globalization.CultureInfo.InvariantCulture))));
        }

        for (int i = 0; i < Groups.Count; i++)
        {
            var group = Groups[i];
            var grad = gradients[i];
            bool all = present[i].All(p => p);
            using var scope = NewDisposeScope();
            if (settings.WeightDecay != 0 && !settings.Decouple)
            {
                using var decay = settings.WeightDecay.ToScalar();
                ForEach(i, all, present, (p, g, j) => g.add_(p, decay), grad);
            }

            // State initialisation: p0 is the parameter when it first has a gradient.
            for (int j = 0; j < group.Count; j++)
            {
                if (present[i][j] && group.Steps[j] == 0)
                {
                    group.Slice(_p0[i], j).copy_(group.Slice(group.Buffer, j));
                    group.Slice(_s[i], j).zero_();
                    group.Slice(_expAvg[i], j).zero_();
                    group.Slice(_expAvgSq[i], j).zero_();
                }
            }

            if (!(learningRates[i] > 0.0))
                continue;

            // Per parameter, in order: dot(g, p0 - p) (float32), accumulated in double as the reference's .item() sums.
            var difference = _p0[i].sub(group.Buffer);
            var dots = stack(Enumerable.Range(0, group.Count).Where(j => present[i][j])
                .Select(j => dot(group.Slice(grad, j), group.Slice(difference, j))).ToList()).cpu();
            var dotValues = dots.data<float>().ToArray();
            double scale = d / d0 * dlr;
            foreach (float value in dotValues)
                deltaNumerator += scale * value;

            using var beta1Scalar = beta1.ToScalar();
            using var gradWeight = (d * (1 - beta1)).ToScalar();
            using var beta2Scalar = beta2.ToScalar();
            using var squareWeight = (d * d * (1 - beta2)).ToScalar();
            using var beta3Scalar = beta3.ToScalar();
            using var sWeight = (settings.SafeguardWarmup ? d / d0 * d : d / d0 * dlr).ToScalar();
            ForEach(i, all, present, (j, slices) =>
            {
                var (g, expAvg, expAvgSq, s) = slices;
                if (beta1 > 0)
                    expAvg.mul_(beta1Scalar).add_(g, gradWeight);
                expAvgSq.mul_(beta2Scalar).addcmul_(g, g, squareWeight);
                s.mul_(beta3Scalar).add_(g, sWeight);
            }, grad);

            var sums = stack(Enumerable.Range(0, group.Count).Where(j => present[i][j])
                .Select(j => group.Slice(_s[i], j).abs().sum()).ToList()).cpu();
            foreach (float value in sums.data<float>().ToArray())
                dDenominator += value;
        }

        // No gradient signal at all: the reference returns before changing anything else.
        if (dDenominator == 0)
            return;

        double globalNumerator = dNumerator + deltaNumerator;
        double dHat = d;
        if (lr > 0.0)
        {
            dHat = settings.DCoef * globalNumerator / dDenominator;
            if (d == d0)
                d = Math.Max(d, dHat);
            dMax = Math.Max(dMax, dHat);
            d = Math.Min(dMax, d * settings.GrowthRate);
        }

        DNumerator = globalNumerator;
        D = d;
        DMax = dMax;

        for (int i = 0; i < Groups.Count; i++)
        {
            var group = Groups[i];
            var grad = gradients[i];
            bool all = present[i].All(p => p);
            using var scope = NewDisposeScope();
            using var negativeDlr = (-dlr).ToScalar();
            using var decayWeight = (-settings.WeightDecay * dlr).ToScalar();
            using var negativeDlrD = (-dlr * d).ToScalar();
            for (int j = 0; j < group.Count; j++)
            {
                if (present[i][j])
                    group.Steps[j]++;
            }

            ForEach(i, all, present, (j, slices) =>
            {
                var (g, expAvg, expAvgSq, _) = slices;
                var parameter = j < 0 ? group.Buffer : group.Slice(group.Buffer, j);
                var denominator = expAvgSq.sqrt().PlusInPlace(d * settings.Eps);
                if (settings.WeightDecay != 0 && settings.Decouple)
                    parameter.add_(parameter, decayWeight);
                if (beta1 > 0)
                    parameter.addcdiv_(expAvg, denominator, negativeDlr);
                else
                    parameter.addcdiv_(g, denominator, negativeDlrD);
            }, grad);
        }

        K++;
        EffectiveLearningRates = learningRates.Select(r => d * r).ToArray();
    }

    protected override void LoadStateCore(Func<string, Tensor> read)
    {
        for (int i = 0; i < Groups.Count; i++)
        {
            var g = Groups[i];
            for (int j = 0; j < g.Count; j++)
            {
                string name = g.Parameters[j].Name;
                g.Shaped(_expAvg[i], j).copy_(read($"{name}.exp_avg"));
                g.Shaped(_expAvgSq[i], j).copy_(read($"{name}.exp_avg_sq"));
                g.Slice(_s[i], j).copy_(read($"{name}.s").reshape(-1));
                g.Slice(_p0[i], j).copy_(read($"{name}.p0").reshape(-1));
                g.Steps[j] = (long)ReadScalar(read($"{name}.step"));
            }
        }

        D = ReadScalar(read("prodigy.d"));
        DMax = ReadScalar(read("prodigy.d_max"));
        DNumerator = ReadScalar(read("prodigy.d_numerator"));
        K = (long)ReadScalar(read("prodigy.k"));
    }

    /// <summary>Runs <paramref name="update"/> on the whole group's buffers (index -1) when every parameter has a gradient, else on each such parameter's slices.</summary>
    private void ForEach(int groupIndex, bool all, bool[][] present, Action<int, (Tensor Grad, Tensor ExpAvg, Tensor ExpAvgSq, Tensor S)> update, Tensor grad)
    {
        var group = Groups[groupIndex];
        if (all)
        {
            update(-1, (grad, _expAvg[groupIndex], _expAvgSq[groupIndex], _s[groupIndex]));
            return;
        }

        for (int j = 0; j < group.Count; j++)
        {
            if (!present[groupIndex][j])
                continue;
            using var scope = NewDisposeScope();
            update(j, (group.Slice(grad, j), group.Slice(_expAvg[groupIndex], j), group.Slice(_expAvgSq[groupIndex], j), group.Slice(_s[groupIndex], j)));
        }
    }

    private void ForEach(int groupIndex, bool all, bool[][] present, Action<Tensor, Tensor, int> update, Tensor grad)
    {
        var group = Groups[groupIndex];
        if (all)
        {
            update(group.Buffer, grad, -1);
            return;
        }

        for (int j = 0; j < group.Count; j++)
        {
            if (!present[groupIndex][j])
                continue;
            using var scope = NewDisposeScope();
            update(group.Slice(group.Buffer, j), group.Slice(grad, j), j);
        }
    }
}
