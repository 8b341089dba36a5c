using System.IO.Compression;
using System.Reflection;
using StableLora.IO;
using StableLora.TextEncoder;

namespace StableLora.Pipeline;

/// <summary>Where a pipeline's CLIP tokenizer comes from: a <c>tokenizer</c> folder, or the vocabulary built into StableLora.</summary>
internal abstract class TokenizerFiles
{
    private static readonly string[] FileNames =
        { ClipVocabularyFiles.VocabFileName, ClipVocabularyFiles.MergesFileName, ClipVocabularyFiles.ConfigFileName, "special_tokens_map.json" };

    /// <summary>
    /// SD 1.x's tokenizer (openai/clip-vit-large-patch14's vocabulary and merges, as the SD 1.5 repository ships them),
    /// embedded gzip-compressed; see THIRD-PARTY-NOTICES.md for its MIT licence.
    /// </summary>
    public static TokenizerFiles BuiltIn { get; } = new BuiltInFiles();

    public static TokenizerFiles Folder(string directory) => new FolderFiles(directory);

    public abstract string Description { get; }

    public abstract ClipTokenizer Load();

    /// <summary>Writes <c>vocab.json</c>, <c>merges.txt</c> and, where known, <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c>.</summary>
    public abstract void WriteTo(string directory);

    private sealed class FolderFiles(string directory) : TokenizerFiles
    {
        public override string Description => directory;

        public override ClipTokenizer Load() => ClipTokenizer.FromDirectory(directory);

        public override void WriteTo(string target)
        {
            Directory.CreateDirectory(target);
            foreach (string name in FileNames)
            {
                string source = Path.Combine(directory, name);
                if (File.Exists(source))
                    AtomicFile.Write(Path.Combine(target, name), stream =>
                    {
                        using var input = File.OpenRead(source);
                        input.CopyTo(stream);
                    });
            }
        }
    }

    private sealed class BuiltInFiles : TokenizerFiles
    {
        private readonly Lazy<ClipTokenizer> _tokenizer = new(() => ClipTokenizer.Create(
            ClipVocabularyFiles.ParseVocabulary(Text(ClipVocabularyFiles.VocabFileName), "built-in CLIP vocab.json"), "built-in CLIP vocab.json",
            ClipVocabularyFiles.ParseMerges(Text(ClipVocabularyFiles.MergesFileName), "built-in CLIP merges.txt"), "built-in CLIP merges.txt"));

        public override string Description => "the built-in SD 1.5 (CLIP ViT-L/14) tokenizer";

        // The tokenizer is immutable and thread-safe, so one instance serves every pipeline.
        public override ClipTokenizer Load() => _tokenizer.Value;

        public override void WriteTo(string target)
        {
            Directory.CreateDirectory(target);
            foreach (string name in FileNames)
                AtomicFile.WriteAllText(Path.Combine(target, name), Text(name));
        }

        private static string Text(string name)
        {
            bool compressed = name is "vocab.json" or "merges.txt";
            string resource = $"StableLora.clip/{name}{(compressed ? ".gz" : "")}";
            using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(resource)
                               ?? throw new InvalidOperationException($"embedded resource {resource} is missing from the build");
            using var content = compressed ? new GZipStream(stream, CompressionMode.Decompress) : stream;
            using var reader = new StreamReader(content);
            return reader.ReadToEnd();
        }
    }
}
