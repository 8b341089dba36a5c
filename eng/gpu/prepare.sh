#!/usr/bin/env bash
# Prepares .gpu/ for one run on a lent GPU machine (see ../shared/gpu/README.md and docs/benchmarks.md):
# the sample app published without a libtorch package (the machine's PyTorch CUDA libraries are used), a .NET
# runtime, and, when a diffusers mirror is given, the diffusers source and reference script for the side-by-side run.
#   usage: bash eng/gpu/prepare.sh [DIFFUSERS_GIT_DIR [BENCH_DIFFUSERS_PY]]
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu/app
dotnet publish src/StableLora.Samples -c Release -r linux-x64 --self-contained false -o .gpu/app -p:StableLoraTorchBackend=none -p:DebugType=none --nologo -v quiet
# The benchmark draws no plots: leave out SkiaSharp's natives (11 MB) and pack the rest (64 MiB travel in all).
rm -f .gpu/app/*.pdb .gpu/app/*.xml .gpu/app/libSkiaSharp.so .gpu/app/libHarfBuzzSharp.so
tar -cJf .gpu/app.tar.xz -C .gpu app && rm -rf .gpu/app
[ -f .gpu/dotnet-runtime.tar.xz ] || bash "${SHARED_GPU:-../shared/gpu}/make-runtime.sh" .gpu
cp "${SHARED_GPU:-../shared/gpu}/device-run.sh" .gpu/
cp eng/gpu/run-device.sh eng/gpu/run-levers.sh .gpu/
if [ -n "${1:-}" ]; then
  tmp=$(mktemp -d)
  git --git-dir="$1" archive v0.40.0 src/diffusers | tar -x -C "$tmp"
  tar -czf .gpu/diffusers-src.tar.gz -C "$tmp/src" diffusers
  rm -rf "$tmp"
  cp "${2:-eng/reference/bench_diffusers.py}" .gpu/
fi
du -sh .gpu
echo "tracked files: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes (they travel too)"
