using static TorchSharp.torch;

namespace StableLora.Layers;

/// <summary>State dicts in PyTorch's order.</summary>
internal static class StateDicts
{
    /// <summary>
    /// Every parameter and persistent buffer with its dotted name, in the order PyTorch's <c>state_dict()</c> gives:
    /// a module's own parameters, then its own buffers, then each child in registration order. (TorchSharp's own
    /// <c>state_dict()</c> lists all parameters before all buffers.)
    /// </summary>
    public static List<KeyValuePair<string, Tensor>> Ordered(nn.Module module)
    {
        var entries = new List<KeyValuePair<string, Tensor>>();
        Collect(module, "", entries);
        return entries;
    }

    private static void Collect(nn.Module module, string prefix, List<KeyValuePair<string, Tensor>> entries)
    {
        foreach (var (name, parameter) in module.named_parameters(recurse: false))
            entries.Add(new(prefix + name, parameter));
        foreach (var (name, buffer) in module.named_buffers(recurse: false, include_nonpersistent: false))
            entries.Add(new(prefix + name, buffer));
        foreach (var (name, child) in module.named_children())
            Collect(child, prefix + name + ".", entries);
    }
}
