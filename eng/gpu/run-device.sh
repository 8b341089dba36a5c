#!/usr/bin/env bash
# The whole GPU session in one script (run from the repository root on the GPU machine, with .gpu/ from prepare.sh):
# correctness first (tiny training steps on CUDA in fp32/bf16/fp16 against fp32 on the CPU), then StableLora's
# timings on the SD 1.5 architecture at 512 px, the levers measured one at a time, and last the diffusers reference
# in the same session. Every result lands in $OUT (logs and JSON), whatever fails.
#   DRY=1 runs the same sequence on the CPU with the tiny architecture (a rehearsal on any machine).
set -uo pipefail
out=${OUT:-/tmp/stablelora-gpu}; mkdir -p "$out"
start=$(date +%s)
rm -rf /tmp/stablelora-app && mkdir -p /tmp/stablelora-app && tar -xJf .gpu/app.tar.xz -C /tmp/stablelora-app
dll=/tmp/stablelora-app/app/StableLora.Samples.dll
if [ "${DRY:-0}" = 1 ]; then
  device=cpu arch=tiny res=64 big=2 mid=2 small=1 gen="" dtypes_check=fp32 peak=""
  # The published app carries no libtorch: borrow the CPU one from the NuGet cache, as an installed PyTorch's would be.
  export LD_LIBRARY_PATH=$(ls -d ~/.nuget/packages/libtorch-cpu-linux-x64/*/runtimes/linux-x64/native | tail -1)
  app() { dotnet "$dll" "$@"; }
else
  device=cuda arch=sd15 res=512 big=16 mid=8 small=1 gen=--generation dtypes_check=fp32,bf16,fp16 peak="--peak-tflops 790"
  app() { bash .gpu/device-run.sh "$dll" "$@"; }
fi
step() {
  local name=$1 limit=$2; shift 2
  echo "=== [$(( $(date +%s) - start ))s] $name: $*"
  timeout "$limit" bash -c '"$@"' _ "$@" > "$out/$name.log" 2>&1
  echo "exit $?" >> "$out/$name.log"
  grep -v '^\[bench\]' "$out/$name.log" | tail -25
}
bench() { app bench --device "$device" --arch "$arch" --resolution "$res" $peak --warmup 3 --iters 10 "$@"; }
export -f app bench; export dll device arch res peak

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
step check 120 app bench --device "$device" --arch tiny --check "$dtypes_check" --modes "" --iters 1 --warmup 0
step train-bf16 240 bench --dtypes bf16 --batch-sizes "$small,$mid,$big" --modes unet,full --json "$out/train-bf16.json"
step train-bf16-gc 120 bench --dtypes bf16 --batch-sizes "$mid" --modes unet+gc --json "$out/train-bf16-gc.json"
step train-fp16 120 bench --dtypes fp16 --batch-sizes "$mid" --modes unet --json "$out/train-fp16.json"
step train-bf16-kohya-te 150 bench --dtypes bf16 --batch-sizes "$mid" --modes unet,full --targets kohya --train-text-encoder --json "$out/train-bf16-kohya-te.json"
step lever-per-parameter-adamw 120 bench --dtypes bf16 --batch-sizes "$mid" --modes unet --per-parameter-adamw --json "$out/lever-per-parameter-adamw.json"
step lever-no-flash 120 bench --dtypes bf16 --batch-sizes "$mid" --modes unet --no-flash-sdp --json "$out/lever-no-flash.json"
[ -n "$gen" ] && step generate-fp16 150 bench --dtypes fp16 --batch-sizes 1,4 --modes "" --generation --vae --json "$out/generate-fp16.json"
[ -n "$gen" ] && step generate-bf16 120 bench --dtypes bf16 --batch-sizes 1 --modes "" --generation --json "$out/generate-bf16.json"

if [ -f .gpu/diffusers-src.tar.gz ] && [ "${DRY:-0}" != 1 ]; then
  mkdir -p /tmp/diffusers-src && tar -xzf .gpu/diffusers-src.tar.gz -C /tmp/diffusers-src
  left=$(( 560 - ($(date +%s) - start) ))
  if [ "$left" -gt 60 ]; then
    py=/opt/torch/.venv/bin/python3; [ -x "$py" ] || py=python3
    PYTHONPATH=/tmp/diffusers-src step diffusers $(( left - 5 )) "$py" .gpu/bench_diffusers.py --out "$out/diffusers.json" \
      --plan bf16:unet:8,bf16:full:8,bf16:unet:1,bf16:unet:16,bf16:unet+gc:8 --budget-s $(( left - 60 )) --hard-s $(( left - 20 ))
    left=$(( 580 - ($(date +%s) - start) ))
    [ "$left" -gt 60 ] && PYTHONPATH=/tmp/diffusers-src step diffusers-kohya-te $(( left - 5 )) "$py" .gpu/bench_diffusers.py --out "$out/diffusers-kohya-te.json" \
      --targets kohya --train-text-encoder --plan bf16:unet:8,bf16:full:8 --budget-s $(( left - 40 )) --hard-s $(( left - 15 ))
  else
    echo "no time left for the diffusers reference ($left s)"
  fi
fi
echo "=== done in $(( $(date +%s) - start ))s"
