using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace StableLora.Samples.Cli;

/// <summary>Warnings and errors to stderr, information too with --verbose.</summary>
internal sealed class ConsoleLogger(bool verbose) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= (verbose ? LogLevel.Information : LogLevel.Warning);

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel))
            return;
        string prefix = logLevel switch
        {
            >= LogLevel.Error => "error",
            LogLevel.Warning => "warning",
            _ => "info",
        };
        Console.Error.WriteLine($"{prefix}: {formatter(state, exception)}");
        if (verbose && exception is not null)
            Console.Error.WriteLine(exception);
    }
}

/// <summary>A progress bar on a terminal, one line every few percent otherwise (CI logs). Reports may come from any thread.</summary>
internal static class ProgressDisplay
{
    public static bool Interactive => AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;

    /// <summary>Runs <paramref name="work"/>, which reports (done, status) through the action it is given.</summary>
    public static async Task<T> RunAsync<T>(string title, long total, Func<Action<long, string>, Task<T>> work)
    {
        if (!Interactive)
        {
            long every = Math.Max(1, total / 20);
            return await work((done, status) =>
            {
                if (done % every == 0 || done == total)
                    Console.WriteLine($"{title} {done}/{total} {status}");
            }).ConfigureAwait(false);
        }

        T result = default!;
        await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async context =>
            {
                var task = context.AddTask(title, maxValue: total);
                result = await work((done, status) =>
                {
                    task.Value = done;
                    task.Description = $"{title} {Markup.Escape(status)}";
                }).ConfigureAwait(false);
                task.Value = total;
            }).ConfigureAwait(false);
        return result;
    }
}
