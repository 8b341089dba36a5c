#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with AFL++ and SharpFuzz, for a fixed time (docs/reliability.md, "Fuzzing").
#   tests/StableLora.Fuzz/run-afl.sh <safetensors|pickle|torchzip|image> <seconds> [--keep]
# --keep copies the minimised queue (the inputs that reached new code) into
# tests/StableLora.Tests/Fixtures/fuzz-corpus/<target>/, which the test suite replays.
# Needs Debian's afl++ (apt-get install afl++) and the SharpFuzz.CommandLine tool
# (dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0); neither is needed to build or test.
set -euo pipefail
target="$1"
seconds="$2"
keep="${3:-}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/artifacts/fuzz"
bin="$out/bin-$target"
corpus="$root/tests/StableLora.Tests/Fixtures/fuzz-corpus/$target"
export PATH="$PATH:$HOME/.dotnet/tools"
dotnet="$(command -v dotnet)" # afl-fuzz and afl-cmin want the full path

rm -rf "$bin" "$out/seeds-$target" "$out/findings-$target"
dotnet build "$root/tests/StableLora.Fuzz" -c Release -o "$bin" -p:UseAppHost=false >/dev/null
# Seeds first: instrumented code only runs under the harness.
dotnet "$bin/StableLora.Fuzz.dll" seeds "$out/seeds" >/dev/null
# Only the code under test carries AFL instrumentation: StableLora's readers and, for images, ImageSharp.
sharpfuzz "$bin/StableLora.dll" StableLora.IO StableLora.Data >/dev/null
if [ "$target" = image ]; then sharpfuzz "$bin/SixLabors.ImageSharp.dll" >/dev/null; fi
mkdir -p "$out/seeds-$target"
cp "$out/seeds/$target"/* "$out/seeds-$target/"
if [ -d "$corpus" ]; then cp "$corpus"/* "$out/seeds-$target/" 2>/dev/null || true; fi
if [ "$target" = image ]; then cp "$root/tests/StableLora.Tests/Fixtures/images"/* "$out/seeds-$target/"; fi

export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
afl-fuzz -i "$out/seeds-$target" -o "$out/findings-$target" -t 5000 -m none -V "$seconds" \
  -- "$dotnet" "$bin/StableLora.Fuzz.dll" afl "$target" >"$out/afl-$target.log" 2>&1 || { tail -30 "$out/afl-$target.log"; exit 1; }

stats="$out/findings-$target/default/fuzzer_stats"
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg)' "$stats"

# Every crash and hang is replayed outside AFL to show what it was.
for kind in crashes hangs; do
  files=("$out/findings-$target/default/$kind"/id:*)
  if [ -e "${files[0]}" ]; then
    echo "== $kind"
    timeout 60 dotnet "$bin/StableLora.Fuzz.dll" replay "$target" "${files[@]}" | tail -20 || true
  fi
done

if [ "$keep" = --keep ]; then
  rm -rf "$out/min-$target"
  if ! afl-cmin -i "$out/findings-$target/default/queue" -o "$out/min-$target" -t 5000 -m none \
      -- "$dotnet" "$bin/StableLora.Fuzz.dll" afl "$target" >"$out/cmin-$target.log" 2>&1; then
    echo "afl-cmin failed (see $out/cmin-$target.log); keeping the whole queue"
    mkdir -p "$out/min-$target"
    cp "$out/findings-$target/default/queue"/id:* "$out/min-$target/"
  fi
  mkdir -p "$corpus"
  for file in "$out/min-$target"/*; do
    # Content-addressed names: re-runs add new inputs without duplicating old ones.
    cp "$file" "$corpus/$(sha1sum "$file" | cut -c1-16)"
  done
  echo "corpus: $(ls "$corpus" | wc -l) files, $(du -sh "$corpus" | cut -f1) in $corpus"
fi
