namespace StableLora.Fuzz;

/// <summary>
/// A seeded byte-level mutator (bit flips, interesting integers, insertions, deletions, duplications, truncation,
/// splices between seeds): the fuzzer of the test suite and of machines without AFL++. The same seed gives the same
/// inputs, so any failure it reports can be replayed.
/// </summary>
internal sealed class Mutator(int seed)
{
    private static readonly long[] Interesting =
    {
        0, 1, -1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, int.MaxValue, int.MinValue, uint.MaxValue,
        long.MaxValue, long.MinValue, 1L << 32, 1L << 40, 1L << 62, 100_000_000, 104_857_600,
    };

    private readonly Random _random = new(seed);

    public byte[] Mutate(byte[] input, IReadOnlyList<byte[]> pool)
    {
        var data = new List<byte>(input);
        int rounds = 1 + _random.Next(4);
        for (int round = 0; round < rounds; round++)
            MutateOnce(data, pool);
        return data.ToArray();
    }

    private void MutateOnce(List<byte> data, IReadOnlyList<byte[]> pool)
    {
        if (data.Count == 0)
        {
            data.Add((byte)_random.Next(256));
            return;
        }

        int at = _random.Next(data.Count);
        switch (_random.Next(9))
        {
            case 0:
                data[at] ^= (byte)(1 << _random.Next(8));
                break;
            case 1:
                data[at] = (byte)_random.Next(256);
                break;
            case 2:
                WriteInteger(data, at, Interesting[_random.Next(Interesting.Length)], width: 1 << _random.Next(4));
                break;
            case 3:
                data.InsertRange(at, Enumerable.Range(0, 1 + _random.Next(16)).Select(_ => (byte)_random.Next(256)));
                break;
            case 4:
                data.RemoveRange(at, Math.Min(data.Count - at, 1 + _random.Next(32)));
                break;
            case 5:
            {
                int length = Math.Min(data.Count - at, 1 + _random.Next(64));
                data.InsertRange(_random.Next(data.Count), data.GetRange(at, length));
                break;
            }

            case 6:
                data.RemoveRange(at, data.Count - at);
                break;
            case 7:
            {
                var other = pool[_random.Next(pool.Count)];
                if (other.Length == 0)
                    break;
                int from = _random.Next(other.Length);
                int length = Math.Min(other.Length - from, 1 + _random.Next(128));
                data.RemoveRange(at, Math.Min(data.Count - at, length));
                data.InsertRange(at, other.Skip(from).Take(length));
                break;
            }

            default:
            {
                // ASCII digits: headers of safetensors and text pickle opcodes carry numbers as text.
                string number = Interesting[_random.Next(Interesting.Length)].ToString(System.Globalization.CultureInfo.InvariantCulture);
                data.InsertRange(at, number.Select(c => (byte)c));
                break;
            }
        }
    }

    private void WriteInteger(List<byte> data, int at, long value, int width)
    {
        bool bigEndian = _random.Next(2) == 0;
        for (int i = 0; i < width && at + i < data.Count; i++)
        {
            int shift = 8 * (bigEndian ? width - 1 - i : i);
            data[at + i] = (byte)(value >> shift);
        }
    }
}
