// MSBuild inline task used by eng/GlibcxxCompat.targets (compiled by RoslynCodeTaskFactory, not part of any project).
#nullable enable
using System;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class StableLoraWeakenGlibcxxRequirement : Task
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    private static readonly string[] LibraryDirectories =
    {
        "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
        "/lib64", "/usr/lib64", "/lib", "/usr/lib",
    };

    [Required]
    public ITaskItem[] Libraries { get; set; } = Array.Empty<ITaskItem>();

    [Required]
    public string VersionName { get; set; } = "";

    public override bool Execute()
    {
        string? systemLibrary = FindSystemLibstdcxx();
        if (systemLibrary is null)
        {
            Log.LogMessage(MessageImportance.Low, "StableLora: no system libstdc++.so.6 found; leaving libLibTorchSharp.so as it is.");
            return true;
        }

        if (Contains(File.ReadAllBytes(systemLibrary), Encoding.ASCII.GetBytes(VersionName + "\0")))
        {
            Log.LogMessage(MessageImportance.Low, $"StableLora: {systemLibrary} provides {VersionName}; no patch needed.");
            return true;
        }

        foreach (ITaskItem item in Libraries)
        {
            string path = item.GetMetadata("FullPath");
            try
            {
                PatchFile(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
            {
                Log.LogError($"StableLora: could not mark {VersionName} weak in {path}: {e.Message}");
            }
        }

        return !Log.HasLoggedErrors;
    }

    private void PatchFile(string path)
    {
        byte[] image = File.ReadAllBytes(path);
        switch (MarkWeak(image, VersionName))
        {
            case PatchResult.AlreadyWeak:
                Log.LogMessage(MessageImportance.Low, $"StableLora: {path} already treats {VersionName} as weak.");
                return;
            case PatchResult.NotRequired:
                Log.LogMessage(MessageImportance.Low, $"StableLora: {path} does not require {VersionName}.");
                return;
        }

        // Replace the file instead of writing into it: the output copy may be a hard link into the NuGet cache.
        DateTime lastWrite = File.GetLastWriteTimeUtc(path);
        string temporary = path + ".glibcxx-tmp";
        File.WriteAllBytes(temporary, image);
        File.SetLastWriteTimeUtc(temporary, lastWrite);
        File.Delete(path);
        File.Move(temporary, path);
        Log.LogMessage(MessageImportance.High, $"StableLora: marked {VersionName} weak in {path} (the system libstdc++ lacks it).");
    }

    private enum PatchResult { Patched, AlreadyWeak, NotRequired }

    private static PatchResult MarkWeak(byte[] elf, string versionName)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only 64-bit little-endian ELF files are supported");

        ulong sectionHeaderOffset = BitConverter.ToUInt64(elf, 0x28);
        int sectionHeaderSize = BitConverter.ToUInt16(elf, 0x3a);
        int sectionCount = BitConverter.ToUInt16(elf, 0x3c);
        for (int i = 0; i < sectionCount; i++)
        {
            int header = checked((int)sectionHeaderOffset + i * sectionHeaderSize);
            if (BitConverter.ToUInt32(elf, header + 4) != ShtGnuVerneed)
                continue;

            int verneedOffset = checked((int)BitConverter.ToUInt64(elf, header + 0x18));
            int linkedStrings = (int)BitConverter.ToUInt32(elf, header + 0x28);
            int stringsHeader = checked((int)sectionHeaderOffset + linkedStrings * sectionHeaderSize);
            int stringsOffset = checked((int)BitConverter.ToUInt64(elf, stringsHeader + 0x18));

            int need = verneedOffset;
            while (true)
            {
                int auxCount = BitConverter.ToUInt16(elf, need + 2);
                int aux = need + (int)BitConverter.ToUInt32(elf, need + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    int name = stringsOffset + (int)BitConverter.ToUInt32(elf, aux + 8);
                    if (ReadString(elf, name) == versionName)
                    {
                        ushort flags = BitConverter.ToUInt16(elf, aux + 4);
                        if ((flags & VerFlgWeak) != 0)
                            return PatchResult.AlreadyWeak;
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, aux + 4);
                        return PatchResult.Patched;
                    }

                    aux += (int)BitConverter.ToUInt32(elf, aux + 12);
                }

                uint next = BitConverter.ToUInt32(elf, need + 12);
                if (next == 0)
                    break;
                need += (int)next;
            }
        }

        return PatchResult.NotRequired;
    }

    private static string ReadString(byte[] bytes, int offset)
    {
        int end = Array.IndexOf(bytes, (byte)0, offset);
        return Encoding.ASCII.GetString(bytes, offset, end - offset);
    }

    private static string? FindSystemLibstdcxx()
    {
        string? fromEnvironment = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
        var directories = (fromEnvironment ?? "").Split(new[] { ':' }, StringSplitOptions.RemoveEmptyEntries).Concat(LibraryDirectories);
        return directories.Select(d => Path.Combine(d, "libstdc++.so.6")).FirstOrDefault(File.Exists);
    }

    private static bool Contains(byte[] haystack, byte[] needle)
    {
        for (int start = Array.IndexOf(haystack, needle[0]); start >= 0 && start <= haystack.Length - needle.Length;
             start = Array.IndexOf(haystack, needle[0], start + 1))
        {
            int matched = 1;
            while (matched < needle.Length && haystack[start + matched] == needle[matched])
                matched++;
            if (matched == needle.Length)
                return true;
        }

        return false;
    }
}
