namespace StableLora.Data;

/// <summary>
/// Training images followed by regularisation (class) images, as one index space: indices below
/// <see cref="TrainCount"/> are training images, the rest regularisation images (sd-scripts' <c>is_reg</c> subsets).
/// </summary>
internal sealed class RegularizedDataset : IImageDataset
{
    public RegularizedDataset(IImageDataset train, IImageDataset regularization)
    {
        Train = train;
        Regularization = regularization;
    }

    public IImageDataset Train { get; }

    public IImageDataset Regularization { get; }

    public int TrainCount => Train.Count;

    public int Count => Train.Count + Regularization.Count;

    public bool IsRegularization(int index) => index >= Train.Count;

    public string NameOf(int index) => index < Train.Count ? Train.NameOf(index) : Regularization.NameOf(index - Train.Count);

    public TrainingImage Load(int index) => index < Train.Count ? Train.Load(index) : Regularization.Load(index - Train.Count);

    /// <summary>The folder dataset behind <paramref name="dataset"/> (through a mask wrapper), or itself.</summary>
    public static IImageDataset Unwrap(IImageDataset dataset) => dataset is MaskedDataset masked ? masked.Inner : dataset;
}
