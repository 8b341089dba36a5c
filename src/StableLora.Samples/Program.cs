return await StableLora.Samples.Cli.Cli.MainAsync(args);
