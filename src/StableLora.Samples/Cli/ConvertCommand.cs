using System.CommandLine;
using Microsoft.Extensions.Logging;

namespace StableLora.Samples.Cli;

/// <summary><c>stablelora convert</c>: a LoRA between the seed's .pt, kohya .safetensors and diffusers/PEFT formats.</summary>
internal sealed class ConvertCommand
{
    private readonly Option<string> _in = new("--in") { Description = "LoRA file to read (any supported format)", Required = true };
    private readonly Option<string> _out = new("--out") { Description = "File to write", Required = true };
    private readonly Option<string> _format = new("--format") { Description = "pt, kohya or peft", Required = true };
    private readonly Option<string?> _model = Parsing.Option<string?>("--model", "A diffusers folder to check the LoRA against");

    public Command Build(Option<bool> verbose)
    {
        var command = new Command("convert", "Convert a LoRA between the .pt, kohya and PEFT formats");
        foreach (var option in new Option[] { _in, _out, _format, _model })
            command.Options.Add(option);
        command.SetAction((result, cancellationToken) => Cli.RunAsync(result.GetValue(verbose), logger => Task.FromResult(Run(result))));
        return command;
    }

    private int Run(ParseResult result)
    {
        var format = Parsing.Format(result.GetValue(_format)!);
        LoraWeights.Convert(result.GetValue(_in)!, result.GetValue(_out)!, format, result.GetValue(_model));
        Console.WriteLine(result.GetValue(_out));
        return ExitCodes.Success;
    }
}
