using StableLora.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>SGD's hyper-parameters (sd-scripts' SGDNesterov: momentum 0.9, Nesterov, no dampening).</summary>
/// <param name="Momentum">The momentum factor (positive: Nesterov momentum needs one).</param>
/// <param name="WeightDecay">L2 penalty added to the gradient (g + wd x p).</param>
internal sealed record SgdSettings(double Momentum = 0.9, double WeightDecay = 0.0);

/// <summary>
/// SGD with Nesterov momentum and the arithmetic of torch 1.13's single-tensor <c>torch.optim.SGD</c> (dampening 0):
/// d = g + wd x p; the momentum buffer starts as d and is then b = momentum x b + d; p -= lr x (d + momentum x b).
/// </summary>
internal sealed class SgdOptimizer : FlatGroupOptimizer
{
    private readonly List<Tensor> _momentum;

    public SgdOptimizer(IReadOnlyList<IReadOnlyList<(string Name, Parameter Parameter)>> groups, SgdSettings settings)
        : base(groups, "SGD")
    {
        if (!(settings.Momentum > 0))
            throw new ArgumentException("Nesterov momentum needs a positive momentum", nameof(settings));
        Settings = settings;
        _momentum = Groups.Select(g => g.NewState()).ToList();
    }

    public SgdSettings Settings { get; }

    /// <summary>Each parameter's momentum buffer and step count (whether the buffer has started).</summary>
    public override List<KeyValuePair<string, Tensor>> StateTensors() =>
        Groups.SelectMany((g, i) => g.Parameters.SelectMany((p, j) => new[]
            {
                new KeyValuePair<string, Tensor>($"{p.Name}.momentum_buffer", g.Shaped(_momentum[i], j)),
                new KeyValuePair<string, Tensor>($"{p.Name}.step", ScalarTensor(g.Steps[j])),
            }))
            .OrderBy(p => p.Key, StringComparer.Ordinal).ToList();

    public override void Dispose()
    {
        foreach (var t in _momentum)
            t.Dispose();
        base.Dispose();
    }

    protected override void StepCore(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor> gradients, bool[][] present)
    {
        EffectiveLearningRates = learningRates.ToArray();
        for (int i = 0; i < Groups.Count; i++)
        {
            var group = Groups[i];
            if (present[i].All(p => p) && group.Steps.All(s => s == group.Steps[0]))
            {
                Update(group.Buffer, gradients[i], _momentum[i], learningRates[i], first: group.Steps[0] == 0);
                for (int j = 0; j < group.Count; j++)
                    group.Steps[j]++;
                continue;
            }

            for (int j = 0; j < group.Count; j++)
            {
                if (!present[i][j])
                    continue;
                using var scope = NewDisposeScope();
                Update(group.Slice(group.Buffer, j), group.Slice(gradients[i], j), group.Slice(_momentum[i], j), learningRates[i], first: group.Steps[j] == 0);
                group.Steps[j]++;
            }
        }
    }

    protected override void LoadStateCore(Func<string, Tensor> read)
    {
        for (int i = 0; i < Groups.Count; i++)
        {
            for (int j = 0; j < Groups[i].Count; j++)
            {
                string name = Groups[i].Parameters[j].Name;
                Groups[i].Shaped(_momentum[i], j).copy_(read($"{name}.momentum_buffer"));
                Groups[i].Steps[j] = (long)ReadScalar(read($"{name}.step"));
            }
        }
    }

    private void Update(Tensor parameter, Tensor grad, Tensor buffer, double learningRate, bool first)
    {
        using var scope = NewDisposeScope();
        using var weightDecay = Settings.WeightDecay.ToScalar();
        using var momentum = Settings.Momentum.ToScalar();
        using var one = 1.0.ToScalar();
        using var negativeLr = (-learningRate).ToScalar();
        var direction = Settings.WeightDecay != 0 ? grad.add(parameter, weightDecay) : grad;
        if (first)
            buffer.copy_(direction);
        else
            buffer.mul_(momentum).add_(direction, one);
        var nesterov = direction.add(buffer, momentum);
        parameter.add_(nesterov, negativeLr);
    }
}
