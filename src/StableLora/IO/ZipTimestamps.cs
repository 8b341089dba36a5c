using System.Buffers.Binary;

namespace StableLora.IO;

/// <summary>
/// Sets every entry's modification time in a zip archive to 1980-01-01 00:00 (the earliest DOS time), in the local
/// headers and the central directory, so that the same tensors always give the same bytes: a reproducible build of
/// a LoRA, and checksums that compare runs. The archive is otherwise unchanged.
/// </summary>
internal static class ZipTimestamps
{
    private const uint EndOfCentralDirectorySignature = 0x06054b50;
    private const uint CentralHeaderSignature = 0x02014b50;
    private const uint LocalHeaderSignature = 0x04034b50;
    private const ushort DosTime = 0;
    private const ushort DosDate = (0 << 9) | (1 << 5) | 1;

    public static void Normalize(Span<byte> archive)
    {
        int end = FindEndOfCentralDirectory(archive);
        int entries = BinaryPrimitives.ReadUInt16LittleEndian(archive[(end + 10)..]);
        uint directoryOffset = BinaryPrimitives.ReadUInt32LittleEndian(archive[(end + 16)..]);
        if (entries == ushort.MaxValue || directoryOffset == uint.MaxValue)
            throw new InvalidDataException("zip64 archives are not handled (over 65535 entries or 4 GiB)");
        int offset = checked((int)directoryOffset);
        for (int i = 0; i < entries; i++)
        {
            Expect(archive, offset, CentralHeaderSignature);
            SetTime(archive[(offset + 12)..]);
            int local = checked((int)BinaryPrimitives.ReadUInt32LittleEndian(archive[(offset + 42)..]));
            Expect(archive, local, LocalHeaderSignature);
            SetTime(archive[(local + 10)..]);
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(archive[(offset + 28)..]);
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(archive[(offset + 30)..]);
            int commentLength = BinaryPrimitives.ReadUInt16LittleEndian(archive[(offset + 32)..]);
            offset += 46 + nameLength + extraLength + commentLength;
        }
    }

    private static void SetTime(Span<byte> field)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(field, DosTime);
        BinaryPrimitives.WriteUInt16LittleEndian(field[2..], DosDate);
    }

    private static int FindEndOfCentralDirectory(ReadOnlySpan<byte> archive)
    {
        for (int position = archive.Length - 22; position >= Math.Max(0, archive.Length - 22 - ushort.MaxValue); position--)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(archive[position..]) == EndOfCentralDirectorySignature)
                return position;
        }

        throw new InvalidDataException("not a zip archive: no end-of-central-directory record");
    }

    private static void Expect(ReadOnlySpan<byte> archive, int offset, uint signature)
    {
        if (offset < 0 || offset + 4 > archive.Length || BinaryPrimitives.ReadUInt32LittleEndian(archive[offset..]) != signature)
            throw new InvalidDataException($"zip record expected at offset {offset}");
    }
}
