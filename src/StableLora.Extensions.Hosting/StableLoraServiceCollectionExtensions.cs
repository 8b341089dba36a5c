using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using StableLora;
using StableLora.Extensions.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers StableLora in a service collection.</summary>
public static class StableLoraServiceCollectionExtensions
{
    /// <summary>
    /// Registers one <see cref="StableDiffusionGenerator"/> for the application, built from <see cref="StableLoraOptions"/>
    /// when first resolved (loading takes seconds to minutes: resolve it at start-up to pay that once) and disposed with
    /// the service provider. Its calls are serialised (see <see cref="StableDiffusionGenerator"/>); choose LoRAs per
    /// call with <see cref="GenerationOptions.Loras"/>. Logs go to the registered <see cref="ILoggerFactory"/>, if any.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets the options; <see cref="StableLoraOptions.Model"/> is required.</param>
    public static IServiceCollection AddStableLora(this IServiceCollection services, Action<StableLoraOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<StableLoraOptions>().Configure(configure);
        return AddGenerator(services);
    }

    /// <summary>As <see cref="AddStableLora(IServiceCollection, Action{StableLoraOptions})"/>, with the options bound from a configuration section.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="section">A section whose keys are <see cref="StableLoraOptions"/>' property names.</param>
    public static IServiceCollection AddStableLora(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        services.AddOptions<StableLoraOptions>().Bind(section);
        return AddGenerator(services);
    }

    private static IServiceCollection AddGenerator(IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions<StableLoraOptions>()
            .Validate(o => !string.IsNullOrWhiteSpace(o.Model), $"{nameof(StableLoraOptions)}.{nameof(StableLoraOptions.Model)} is required: a diffusers folder, a single-file checkpoint or a hub id");
        services.TryAddSingleton(provider => Build(provider.GetRequiredService<IOptions<StableLoraOptions>>().Value, provider.GetService<ILoggerFactory>()));
        return services;
    }

    private static StableDiffusionGenerator Build(StableLoraOptions options, ILoggerFactory? loggers)
    {
        var builder = StableDiffusionGenerator.FromPretrained(options.Model!)
            .WithDevice(options.Device)
            .WithDType(options.DType)
            .WithHubOptions(new HubOptions { AllowDownloads = options.AllowDownloads, CacheDirectory = options.CacheDirectory })
            .WithLogger(loggers?.CreateLogger("StableLora") ?? NullLogger.Instance);
        if (options.Scheduler is { } scheduler)
            builder.WithScheduler(scheduler);
        if (options.Variant is { } variant)
            builder.WithVariant(variant);
        return builder.Build();
    }
}
