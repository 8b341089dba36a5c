# Turns every ```csharp block of README.md into ReadmeSampleN.cs: the block's using directives at the top, its
# statements inside `static async Task RunAsync()` of class ReadmeSampleN. Blocks that use the built-in demo model
# (DemoPipeline) are marked RunsOnCpu: eng/package-smoke-test.sh runs them, and only compiles the others.
# Usage: awk -v out=DIR -f eng/readme-samples.awk README.md
/^```csharp[[:space:]]*$/ { inside = 1; n++; usings = ""; body = ""; cpu = "false"; next }
inside && /^```[[:space:]]*$/ {
  file = out "/ReadmeSample" n ".cs"
  printf "%s\n#pragma warning disable CS1998\nnamespace ReadmeSamples;\n\ninternal static class ReadmeSample%d\n{\n    public const bool RunsOnCpu = %s;\n\n    public static async Task RunAsync()\n    {\n%s    }\n}\n", usings, n, cpu, body > file
  close(file)
  inside = 0
  next
}
inside && /^using [A-Za-z0-9_.]+;[[:space:]]*$/ { usings = usings $0 "\n"; next }
inside {
  if ($0 ~ /DemoPipeline/) cpu = "true"
  body = body "        " $0 "\n"
}
END {
  file = out "/ReadmeSamples.cs"
  printf "namespace ReadmeSamples;\n\ninternal static class All\n{\n    public static readonly (string Name, bool RunsOnCpu, Func<Task> Run)[] Samples =\n    [\n" > file
  for (i = 1; i <= n; i++) printf "        (\"README C# sample %d\", ReadmeSample%d.RunsOnCpu, ReadmeSample%d.RunAsync),\n", i, i, i > file
  printf "    ];\n}\n" > file
}
