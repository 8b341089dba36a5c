using System.Globalization;
using System.Text;

namespace StableLora.TextEncoder.Normalization;

/// <summary>An immutable set of code points, written like the inside of a regex character class.</summary>
internal sealed class CodePointSet
{
    private readonly (int First, int Last)[] _ranges;

    private CodePointSet((int First, int Last)[] ranges)
    {
        _ranges = Normalize(ranges);
    }

    /// <summary>
    /// Parses a list of characters in which "x-y" stands for the inclusive range x..y (so a literal '-' cannot be
    /// written). Characters outside the BMP are not supported; none of the reference's classes need them.
    /// </summary>
    public static CodePointSet Parse(string members)
    {
        var ranges = new List<(int, int)>();
        for (int i = 0; i < members.Length; i++)
        {
            if (members[i] == '-' || char.IsSurrogate(members[i]))
                throw new ArgumentException($"Unsupported character at {i} in a code point set.", nameof(members));
            if (i + 2 < members.Length && members[i + 1] == '-')
            {
                ranges.Add((members[i], members[i + 2]));
                i += 2;
            }
            else
            {
                ranges.Add((members[i], members[i]));
            }
        }

        return new CodePointSet(ranges.ToArray());
    }

    public static CodePointSet operator |(CodePointSet left, CodePointSet right) =>
        new(left._ranges.Concat(right._ranges).ToArray());

    public bool Contains(int codePoint)
    {
        int low = 0, high = _ranges.Length - 1;
        while (low <= high)
        {
            int middle = (low + high) >> 1;
            if (codePoint < _ranges[middle].First)
                high = middle - 1;
            else if (codePoint > _ranges[middle].Last)
                low = middle + 1;
            else
                return true;
        }

        return false;
    }

    /// <summary>The set as a .NET regex character class, e.g. <c>[\u00C2-\u00DF]</c>.</summary>
    public string ToRegexClass()
    {
        var builder = new StringBuilder("[");
        foreach (var (first, last) in _ranges)
        {
            builder.Append(CultureInfo.InvariantCulture, $"\\u{first:X4}");
            if (last != first)
                builder.Append(CultureInfo.InvariantCulture, $"-\\u{last:X4}");
        }

        return builder.Append(']').ToString();
    }

    private static (int, int)[] Normalize((int First, int Last)[] ranges)
    {
        var sorted = ranges.OrderBy(r => r.First).ToArray();
        var merged = new List<(int First, int Last)>();
        foreach (var range in sorted)
        {
            if (merged.Count > 0 && range.First <= merged[^1].Last + 1)
                merged[^1] = (merged[^1].First, Math.Max(merged[^1].Last, range.Last));
            else
                merged.Add(range);
        }

        return merged.ToArray();
    }
}
