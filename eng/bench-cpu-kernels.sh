#!/usr/bin/env bash
# What the CPU kernel guard costs (docs/benchmarks.md, "CPU kernel guard"): SD 1.5's UNet training step at 64 px with
# libtorch's own kernels (--cpu-kernel-check off: oneDNN, wrong on some CPUs) against the default check (on an affected
# CPU it detects the defects and switches to the fallback: oneDNN and NNPACK
# off, convolutions through the matrix product), alternating rounds because the machine's speed drifts, plus the check's
# own time. Then the cost of each LoRA preset (attention, kohya, kohya + LoCon, kohya + LoCon + text encoder).
# Usage: eng/bench-cpu-kernels.sh [rounds] [out-folder]
set -euo pipefail
rounds="${1:-3}"
out="${2:-bench-cpu-kernels}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
dotnet build src/StableLora.Samples -c Release -v quiet -nologo >/dev/null
run() { dotnet run --project src/StableLora.Samples -c Release --no-build -- "$@"; }
common=(bench --arch sd15 --device cpu --resolution 64 --batch-sizes 1 --warmup 2 --iters 5)
for round in $(seq 1 "$rounds"); do
  for mode in off on; do
    run --cpu-kernel-check "$mode" "${common[@]}" --modes unet --json "$out/kernels-$mode-$round.json" | tee "$out/kernels-$mode-$round.txt" | grep -E "train-unet|CPU kernels"
  done
done
for preset in "--targets attention" "--targets kohya" "--targets kohya --conv-rank 4" "--targets kohya --conv-rank 4 --train-text-encoder"; do
  name=$(echo "$preset" | tr -d '-' | tr ' ' '_')
  # shellcheck disable=SC2086
  run "${common[@]}" --modes unet,full $preset --json "$out/preset$name.json" | tee "$out/preset$name.txt" | grep -E "train-|CPU kernels"
done
