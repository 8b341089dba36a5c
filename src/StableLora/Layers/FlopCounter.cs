namespace StableLora.Layers;

/// <summary>
/// Counts the multiply-add FLOPs of the forward pass (2 per multiply-add: linear, convolution and attention matrix
/// products, as <c>torch.utils.flop_counter</c> counts them) while a counting scope is open on this thread.
/// </summary>
internal static class FlopCounter
{
    [ThreadStatic]
    private static Counting? _current;

    public static IDisposable Start(out Func<long> total)
    {
        var counting = new Counting(_current);
        _current = counting;
        total = () => counting.Flops;
        return counting;
    }

    public static void Add(long flops)
    {
        if (_current is { } counting)
            counting.Flops += flops;
    }

    private sealed class Counting(Counting? outer) : IDisposable
    {
        public long Flops { get; set; }

        public void Dispose() => _current = outer;
    }
}
