#!/usr/bin/env bash
# Trains the built-in demo model from scratch (see README.md beside this file):
#   bash eng/demo-model/train.sh [output-folder] [extra options for Program.cs]
# glibc's malloc otherwise hands the training's large activations back to the kernel after every step and faults
# them in again; keeping freed memory makes the VAE stage about three times faster on the 2-core reference machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
output="${1:-eng/demo-model/out/model}"
shift || true
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=536870912
dotnet build eng/demo-model -c Release -v quiet -nologo
dotnet eng/demo-model/bin/Release/net10.0/StableLora.DemoModel.dll --output "$output" \
  --images 2048 --vae-steps 600 --unet-steps 3500 --batch-size 32 --seed 0 --eval-seeds 8 "$@"
