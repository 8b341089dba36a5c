#!/usr/bin/env bash
# Proves the NuGet package is consumable: a throwaway console app restores StableLora from a local folder (plus the
# public feed for its dependencies), trains a 3-step LoRA on the tiny fixture model and generates an image with it.
# The same app compiles every C# sample of README.md (eng/readme-samples.awk) against the package and runs those that
# use the built-in demo model, which need nothing downloaded.
# Usage: eng/package-smoke-test.sh <folder with StableLora.<version>.nupkg and StableLora.Extensions.Hosting.<version>.nupkg> <version>
set -euo pipefail
packages=$(realpath "$1")
version=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$packages" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
</configuration>
XML
cat > "$work/Smoke.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="StableLora" Version="$version" />
    <PackageReference Include="StableLora.Extensions.Hosting" Version="$version" />
    <PackageReference Include="Microsoft.Extensions.Configuration" Version="8.0.0" />
    <PackageReference Include="libtorch-cpu-linux-x64" Version="2.10.0" />
  </ItemGroup>
</Project>
XML
cat > "$work/Program.cs" <<'CS'
using StableLora;
using StableLora.Data;

string model = args[0], work = args[1];
SketchImageGenerator.Generate(Path.Combine(work, "data"), count: 2, size: 16);
var trainer = LoraTrainingBuilder.FromPretrained(model)
    .WithDataset(Path.Combine(work, "data")).WithResolution(16).WithMaxSteps(3).WithWarmupSteps(1)
    .WithCheckpointEvery(0).WithDevice("cpu").WithOutputDirectory(Path.Combine(work, "output"))
    .Build();
TrainingResult result = await trainer.TrainAsync();
using var generator = StableDiffusionGenerator.FromPretrained(model).WithLora(result.LoraPath).WithDevice("cpu").Build();
using var images = generator.Generate("a sketch", new GenerationOptions { Steps = 2, Seed = 1 });
Console.WriteLine($"package smoke test OK: {result.StepsCompleted} steps, image {images.SaveAll(Path.Combine(work, "images"))[0]}");

Directory.CreateDirectory(Path.Combine(work, "readme"));
Directory.SetCurrentDirectory(Path.Combine(work, "readme"));
foreach (var (name, runsOnCpu, run) in ReadmeSamples.All.Samples)
{
    if (!runsOnCpu)
    {
        Console.WriteLine($"{name}: compiles (it needs a real model, so it is not run)");
        continue;
    }

    await run();
    Console.WriteLine($"{name}: compiles and runs");
}
CS
awk -v out="$work" -f "$repo/eng/readme-samples.awk" "$repo/README.md"
# The app sits outside the repo, so the repo's Directory.*.props do not apply: it is a plain consumer.
cd "$work"
dotnet run -c Release -- "$repo/tests/StableLora.Tests/Fixtures/tiny-sd/pipeline" "$work/run"
