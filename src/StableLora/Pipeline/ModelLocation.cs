namespace StableLora.Pipeline;

/// <summary>Turns what a user names as a model (a folder today; hub ids and single files resolve here too) into a diffusers folder.</summary>
internal static class ModelLocation
{
    public static string Resolve(string model)
    {
        if (Directory.Exists(model))
            return Path.GetFullPath(model);
        if (File.Exists(model))
            throw new InvalidModelFileException(model, null, "single-file checkpoints are not supported yet; use a diffusers model folder");
        throw new InvalidModelFileException(model, null, "no such model folder");
    }
}
