using StableLora.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>Lion's hyper-parameters (lucidrains/lion-pytorch's defaults).</summary>
/// <param name="Beta1">The interpolation weight of the update direction.</param>
/// <param name="Beta2">The decay of the momentum.</param>
/// <param name="WeightDecay">Decoupled weight decay: each step multiplies the parameters by 1 - lr x weight decay.</param>
internal sealed record LionSettings(double Beta1 = 0.9, double Beta2 = 0.99, double WeightDecay = 0.0);

/// <summary>
/// Lion (Chen et al. 2023) with the arithmetic of lucidrains/lion-pytorch's <c>update_fn</c>: decoupled weight decay
/// (p x (1 - lr x wd)), then p - lr x sign(beta1 x m + (1 - beta1) x g), then m = beta2 x m + (1 - beta2) x g.
/// </summary>
internal sealed class LionOptimizer : FlatGroupOptimizer
{
    private readonly List<Tensor> _expAvg;

    public LionOptimizer(IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups, LionSettings settings)
        : base(groups, "Lion")
    {
        Settings = settings;
        _expAvg = Groups.Select(g => g.NewState()).ToList();
    }

    public LionSettings Settings { get; }

    public override List<KeyValuePair<string, Tensor>> StateTensors() =>
        Groups.SelectMany((g, i) => g.Parameters.Select((p, j) => new KeyValuePair<string, Tensor>($"{p.Name}.exp_avg", g.Shaped(_expAvg[i], j))))
            .OrderBy(p => p.Key, StringComparer.Ordinal).ToList();

    public override void Dispose()
    {
        foreach (var t in _expAvg)
            t.Dispose();
        base.Dispose();
    }

    protected override void StepCore(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor> gradients, bool[][] present)
    {
        for (int i = 0; i < Groups.Count; i++)
        {
            var group = Groups[i];
            EffectiveLearningRates = learningRates.ToArray();
            if (present[i].All(p => p))
            {
                Update(group.Buffer, gradients[i], _expAvg[i], learningRates[i]);
                continue;
            }

            for (int j = 0; j < group.Count; j++)
            {
                if (!present[i][j])
                    continue;
                using var scope = NewDisposeScope();
                Update(group.Slice(group.Buffer, j), group.Slice(gradients[i], j), group.Slice(_expAvg[i], j), learningRates[i]);
            }
        }
    }

    protected override void LoadStateCore(Func<string, Tensor> read)
    {
        for (int i = 0; i < Groups.Count; i++)
        {
            for (int j = 0; j < Groups[i].Count; j++)
                Groups[i].Shaped(_expAvg[i], j).copy_(read($"{Groups[i].Parameters[j].Name}.exp_avg"));
        }
    }

    private void Update(Tensor parameter, Tensor grad, Tensor expAvg, double learningRate)
    {
        using var scope = NewDisposeScope();
        using var decay = (1.0 - learningRate * Settings.WeightDecay).ToScalar();
        using var beta1 = Settings.Beta1.ToScalar();
        using var gradWeight1 = (1.0 - Settings.Beta1).ToScalar();
        using var negativeLr = (-learningRate).ToScalar();
        using var beta2 = Settings.Beta2.ToScalar();
        using var gradWeight2 = (1.0 - Settings.Beta2).ToScalar();
        parameter.mul_(decay);
        var update = expAvg.clone().mul_(beta1).add(grad, gradWeight1).sign_();
        parameter.add_(update, negativeLr);
        expAvg.mul_(beta2).add_(grad, gradWeight2);
    }
}
