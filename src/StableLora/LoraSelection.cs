namespace StableLora;

/// <summary>
/// A LoRA file applied to one generation call (<see cref="GenerationOptions.Loras"/>), on top of the LoRAs the
/// generator was built with. Files are read once and kept (see <see cref="StableDiffusionGenerator"/>).
/// </summary>
/// <param name="Path">The LoRA file, in any format <see cref="LoraWeights.Load"/> reads.</param>
/// <param name="Weight">The UNet's weight (1 = as trained).</param>
/// <param name="TextEncoderWeight">The text encoder's weight; null: the same as <paramref name="Weight"/>.</param>
public sealed record LoraSelection(string Path, double Weight = 1.0, double? TextEncoderWeight = null);
