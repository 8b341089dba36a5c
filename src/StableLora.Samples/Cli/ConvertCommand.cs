using System.CommandLine;
using Microsoft.Extensions.Logging;

namespace StableLora.Samples.Cli;

/// <summary>
/// <c>stablelora convert</c>: a LoRA between the .pt, kohya .safetensors and diffusers/PEFT formats, or a model between
/// a diffusers folder and one single-file checkpoint (as AUTOMATIC1111 and ComfyUI load them).
/// </summary>
internal sealed class ConvertCommand
{
    private readonly Option<string> _in = new("--in") { Description = "LoRA file, or model (diffusers folder, single file or hub id), to read", Required = true };
    private readonly Option<string> _out = new("--out") { Description = "File (or, for --format diffusers, folder) to write", Required = true };
    private readonly Option<string> _format = new("--format")
    {
        Description = "LoRA: pt, kohya or peft; model: single-file (one .safetensors) or diffusers (a folder)",
        Required = true,
    };
    private readonly Option<string?> _model = Parsing.Option<string?>("--model", "LoRA: a diffusers folder to check the LoRA against");
    private readonly Option<string?> _dtype = Parsing.Option<string?>("--dtype", "Model: fp32 (default), fp16 or bf16");
    private readonly Option<bool> _overwrite = Parsing.Option<bool>("--overwrite", "Model: replace an existing output");
    private readonly ModelSourceFlags _modelSource = new();

    public Command Build(Option<bool> verbose)
    {
        var command = new Command("convert", "Convert a LoRA between the .pt, kohya and PEFT formats, or a model between a diffusers folder and a single file");
        foreach (var option in new Option[] { _in, _out, _format, _model, _dtype, _overwrite }.Concat(_modelSource.Options))
            command.Options.Add(option);
        command.SetAction((result, cancellationToken) => Cli.RunAsync(result.GetValue(verbose), logger => Task.FromResult(Run(result, logger))));
        return command;
    }

    private int Run(ParseResult result, ILogger logger)
    {
        string format = result.GetValue(_format)!.Trim().ToLowerInvariant();
        string input = result.GetValue(_in)!, output = result.GetValue(_out)!;
        if (format is "single-file" or "diffusers")
        {
            if (result.GetValue(_model) is not null)
                throw new ArgumentException("--model checks a LoRA; a model conversion reads its model from --in");
            var options = new ModelConversionOptions
            {
                DType = ModelDType(result.GetValue(_dtype)),
                Overwrite = result.GetValue(_overwrite),
                Hub = _modelSource.Hub(result),
                SingleFile = _modelSource.SingleFile(result),
                Logger = logger,
            };
            if (format == "single-file")
                ModelConverter.ToSingleFile(input, output, options);
            else
                ModelConverter.ToDiffusersFolder(input, output, options);
            Console.WriteLine(output);
            return ExitCodes.Success;
        }

        if (result.GetValue(_dtype) is not null || result.GetValue(_overwrite))
            throw new ArgumentException("--dtype and --overwrite are for model conversions (--format single-file or diffusers)");
        LoraWeights.Convert(input, output, Parsing.Format(format), result.GetValue(_model));
        Console.WriteLine(output);
        return ExitCodes.Success;
    }

    private static ModelDType ModelDType(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "fp32" or "float32" => StableLora.ModelDType.Float32,
        "fp16" or "float16" => StableLora.ModelDType.Float16,
        "bf16" or "bfloat16" => StableLora.ModelDType.BFloat16,
        _ => throw new ArgumentException($"--dtype {text}: expected fp32, fp16 or bf16"),
    };
}
