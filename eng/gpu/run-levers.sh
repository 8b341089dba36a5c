#!/usr/bin/env bash
# A shorter second GPU session (after run-device.sh): the flash-attention lever measured in alternating processes,
# the full step's memory, and generation. Same conventions as run-device.sh; results in $OUT.
set -uo pipefail
out=${OUT:-/tmp/stablelora-gpu}; mkdir -p "$out"
start=$(date +%s)
rm -rf /tmp/stablelora-app && mkdir -p /tmp/stablelora-app && tar -xJf .gpu/app.tar.xz -C /tmp/stablelora-app
dll=/tmp/stablelora-app/app/StableLora.Samples.dll
app() { bash .gpu/device-run.sh "$dll" "$@"; }
bench() { app bench --device cuda --arch sd15 --resolution 512 --peak-tflops 790 --warmup 3 --iters 10 "$@"; }
step() {
  local name=$1 limit=$2; shift 2
  echo "=== [$(( $(date +%s) - start ))s] $name: $*"
  timeout "$limit" bash -c '"$@"' _ "$@" > "$out/$name.log" 2>&1
  echo "exit $?" >> "$out/$name.log"
  grep '^| train\|^| generate\|^| vae\|^error' "$out/$name.log"
}
export -f app bench; export dll
step steps-bf16 150 bench --dtypes bf16 --batch-sizes 8 --modes unet,full
for round in 1 2; do
  step flash-on-$round 90 bench --dtypes bf16 --batch-sizes 8 --modes unet
  step flash-off-$round 90 bench --dtypes bf16 --batch-sizes 8 --modes unet --no-flash-sdp
done
step generate-fp16 150 bench --dtypes fp16 --batch-sizes 1,4 --modes "" --generation --vae
echo "=== done in $(( $(date +%s) - start ))s"
