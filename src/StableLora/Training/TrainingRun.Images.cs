using System.Diagnostics;
using Microsoft.Extensions.Logging;
using StableLora.Lora;
using StableLora.Data;
using StableLora.Diagnostics;
using StableLora.Hub;
using StableLora.Pipeline;
using StableLora.Schedulers;
using StableLora.TextEncoder;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace StableLora.Training;

/// <summary>Which dataset images a run can use: unreadable ones are skipped or reported before the first step.</summary>
internal sealed partial class TrainingRun
{
    private List<int> UsableImages(IImageDataset dataset)
    {
        var usable = new List<int>();
        for (int i = 0; i < dataset.Count; i++)
        {
            try
            {
                Probe(dataset, i);
                usable.Add(i);
            }
            catch (InvalidImageException e) when (_options.SkipUnreadableImages)
            {
                Log.ImageSkipped(_logger, e.ImageName, e.Message);
            }
        }

        if (usable.Count == 0)
            throw new InvalidDataException("none of the dataset's images can be read");
        Log.DatasetReady(_logger, usable.Count, dataset.Count - usable.Count);
        return usable;
    }

    /// <summary>Checks a folder image's header without decoding it (other datasets are read when used).</summary>
    private static void Probe(IImageDataset dataset, int index)
    {
        switch (RegularizedDataset.Unwrap(dataset))
        {
            case RegularizedDataset regularized when index < regularized.TrainCount:
                Probe(regularized.Train, index);
                break;
            case RegularizedDataset regularized:
                Probe(regularized.Regularization, index - regularized.TrainCount);
                break;
            case ImageFolderDataset folder:
                folder.Probe(index);
                break;
        }
    }
}
