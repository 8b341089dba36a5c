namespace StableLora;

/// <summary>
/// One folder of images in a dataset made of several (sd-scripts' <c>[[datasets.subsets]]</c>): its images are shown
/// <paramref name="Repeats"/> times an epoch, and those without a caption file are captioned <paramref name="ClassTokens"/>.
/// </summary>
/// <param name="ImageDirectory">The folder (its images only, not its sub-folders).</param>
/// <param name="Repeats">How often each image is shown per epoch (sd-scripts' <c>num_repeats</c>).</param>
/// <param name="ClassTokens">The caption of images without a caption file (sd-scripts' <c>class_tokens</c>); null: <see cref="LoraTrainingOptions.Caption"/>.</param>
/// <param name="IsRegularization">A folder of regularisation (class) images (sd-scripts' <c>is_reg</c>), weighted by <see cref="LoraTrainingOptions.PriorLossWeight"/>.</param>
public sealed record DatasetSubset(string ImageDirectory, int Repeats = 1, string? ClassTokens = null, bool IsRegularization = false);
