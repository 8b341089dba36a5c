using TorchSharp;
using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>
/// Gradient checkpointing: a block runs forward without keeping its activations and runs again during backward to
/// rebuild them. The block's trainable parameters (its LoRA weights) are passed to the autograd node as inputs, so they
/// receive gradients even when no tensor entering the block requires one. Forgetting that is how kohya-style trainers
/// lost whole trainings: a reentrant checkpoint whose inputs are all frozen latents cuts the LoRA out of the graph.
/// </summary>
internal static class GradientCheckpoint
{
    /// <summary>
    /// <paramref name="forward"/>(<paramref name="inputs"/>), checkpointed when gradients are being recorded.
    /// <paramref name="forward"/> must be deterministic (the UNet's blocks are: no dropout in training).
    /// </summary>
    public static Tensor Run(Func<Tensor[], Tensor> forward, Tensor[] inputs, nn.Module block)
    {
        if (!is_grad_enabled())
            return forward(inputs);
        var parameters = TrainableParameters(block);
        if (parameters.Count == 0 && !inputs.Any(i => i.requires_grad))
            return forward(inputs);
        var args = new object[1 + inputs.Length + parameters.Count];
        args[0] = new Recipe(forward, inputs.Length);
        inputs.CopyTo(args, 1);
        for (int i = 0; i < parameters.Count; i++)
            args[1 + inputs.Length + i] = parameters[i];
        return CheckpointFunction.apply(args);
    }

    /// <summary>The block's parameters that require gradients, the adapters attached to its layers included.</summary>
    public static List<Tensor> TrainableParameters(nn.Module block)
    {
        var parameters = block.parameters().Where(p => p.requires_grad).Cast<Tensor>().ToList();
        foreach (var layer in block.modules().OfType<Lora.IAdaptableLayer>())
            parameters.AddRange(layer.Adapters.Adapters.SelectMany(a => a.TrainableParameters).Where(p => p.requires_grad));
        return parameters;
    }

    private sealed record Recipe(Func<Tensor[], Tensor> Forward, int InputCount);

    private sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => "StableLoraGradientCheckpoint";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var recipe = (Recipe)vars[0];
            var inputs = vars.Skip(1).Take(recipe.InputCount).Cast<Tensor>().ToArray();
            ctx.save_data("recipe", recipe);
            ctx.save_data("inputNeedsGrad", inputs.Select(i => i.requires_grad).ToArray());
            ctx.save_data("parameters", vars.Skip(1 + recipe.InputCount).Cast<Tensor>().ToArray());
            ctx.save_for_backward(inputs.ToList());
            using var scope = NewDisposeScope();
            return recipe.Forward(inputs).MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var recipe = (Recipe)ctx.get_data("recipe");
            var inputNeedsGrad = (bool[])ctx.get_data("inputNeedsGrad");
            var parameters = (Tensor[])ctx.get_data("parameters");
            var saved = ctx.get_saved_variables();
            var result = new List<Tensor> { null! };
            using (var scope = NewDisposeScope())
            using (enable_grad())
            {
                var inputs = saved.Select((t, i) => inputNeedsGrad[i] ? t.detach().requires_grad_(true) : t.detach()).ToArray();
                var output = recipe.Forward(inputs);
                var wrt = inputs.Where((_, i) => inputNeedsGrad[i]).Concat(parameters).ToList();
                var grads = autograd.grad(new[] { output }, wrt, new[] { gradOutput }, allow_unused: true);
                int next = 0;
                for (int i = 0; i < inputs.Length; i++)
                    result.Add(inputNeedsGrad[i] ? Keep(grads[next++]) : null!);
                for (int i = 0; i < parameters.Length; i++)
                    result.Add(Keep(grads[next++]));
            }

            foreach (var tensor in saved)
                tensor.Dispose();
            return result;
        }

        private static Tensor Keep(Tensor grad) => grad.IsInvalid ? null! : grad.MoveToOuterDisposeScope();
    }
}
