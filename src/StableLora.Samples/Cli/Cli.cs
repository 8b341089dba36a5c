using System.CommandLine;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace StableLora.Samples.Cli;

/// <summary>The <c>stablelora</c> command line: verbs, one-line errors and exit codes.</summary>
internal static class Cli
{
    public static async Task<int> MainAsync(string[] args)
    {
        var verbose = new Option<bool>("--verbose") { Description = "Log progress details and show stack traces", Recursive = true };
        var kernelCheck = new Option<CpuKernelCheck>("--cpu-kernel-check")
        {
            Description = "Check libtorch's CPU kernels before computing on the CPU and switch to a right path if one is wrong: on (default), off, fallback (switch without checking); "
                + $"the {CpuKernels.EnvironmentVariable} environment variable overrides it",
            Recursive = true,
            DefaultValueFactory = _ => CpuKernelCheck.On,
        };
        // A named root rather than RootCommand, whose name is the executable's (StableLora.Samples, also when installed as
        // the stablelora tool): help's usage line shows the command users type.
        var root = new Command("stablelora", "stablelora: train and use LoRA adapters for Stable Diffusion 1.5");
        root.Options.Add(new System.CommandLine.Help.HelpOption());
        root.Options.Add(new VersionOption());
        root.Options.Add(verbose);
        root.Options.Add(kernelCheck);
        root.Subcommands.Add(new TrainCommand().Build(verbose));
        root.Subcommands.Add(new GenerateCommand().Build(verbose));
        root.Subcommands.Add(new ConvertCommand().Build(verbose));
        root.Subcommands.Add(new BenchCommand().Build(verbose));

        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            Console.Error.WriteLine($"error: {parsed.Errors[0].Message} (see stablelora {string.Join(' ', args.TakeWhile(a => !a.StartsWith('-')))} --help)");
            return ExitCodes.BadArguments;
        }

        CpuKernels.Mode = parsed.GetValue(kernelCheck);
        using var cancellation = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            // The first Ctrl+C lets training save a checkpoint; a second one ends the process.
            e.Cancel = !cancellation.IsCancellationRequested;
            cancellation.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            cancellation.Cancel();
        });
        try
        {
            return await parsed.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }, cancellation.Token).ConfigureAwait(false);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>Runs a verb, turning exceptions into one line on stderr and an exit code.</summary>
    public static async Task<int> RunAsync(bool verbose, Func<ILogger, Task<int>> verb)
    {
        var logger = new ConsoleLogger(verbose);
        try
        {
            return await verb(logger).ConfigureAwait(false);
        }
        catch (Exception error)
        {
            var (code, message) = ExitCodes.For(error);
            Console.Error.WriteLine($"error: {message}");
            if (verbose)
                Console.Error.WriteLine(error);
            return code;
        }
    }
}
