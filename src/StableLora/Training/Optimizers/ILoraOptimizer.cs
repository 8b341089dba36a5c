using StableLora.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>
/// What the training loop needs of an optimizer over the LoRA parameters: parameter groups each stepped at its own
/// learning rate, the gradients to unscale and clip before the step, and a state that checkpoints save and restore
/// exactly.
/// </summary>
internal interface ILoraOptimizer : IDisposable
{
    /// <summary>How many parameter groups (with parameters) it has.</summary>
    int GroupCount { get; }

    /// <summary>How many steps have been taken (saved in checkpoints as the trainer state's optimizer steps).</summary>
    long StepCount { get; }

    /// <summary>The parameters, group after group.</summary>
    IReadOnlyList<(string Name, Parameter Parameter)> Parameters { get; }

    /// <summary>
    /// The learning rate each group's update used in the last step, as sd-scripts logs it: the given one for AdamW, Lion
    /// and SGD, d x lr for Prodigy, Adafactor's own (relative) one; before the first step, what the first step will be
    /// given scaled as far as it is known.
    /// </summary>
    IReadOnlyList<double> EffectiveLearningRates { get; }

    /// <summary>The gradients the next <see cref="Step"/> will use; scaling or clipping them in place changes the update.</summary>
    IReadOnlyList<Tensor> Gradients();

    /// <summary>One update of every parameter that has a gradient, each group at its own learning rate.</summary>
    /// <param name="learningRates">One learning rate per group, in group order.</param>
    /// <param name="gradients">What <see cref="Gradients"/> returned (possibly scaled or clipped since); null reads them now.</param>
    void Step(IReadOnlyList<double> learningRates, IReadOnlyList<Tensor>? gradients = null);

    /// <summary>Drops every parameter's gradient.</summary>
    void ZeroGrad();

    /// <summary>The state as named tensors (scalars such as Prodigy's d as one-element float64 tensors) for checkpoints.</summary>
    List<KeyValuePair<string, Tensor>> StateTensors();

    /// <summary>Restores what <see cref="StateTensors"/> gave, with the step count saved beside it.</summary>
    void LoadState(long stepCount, Func<string, Tensor?> readTensor);
}
