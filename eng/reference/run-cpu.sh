#!/usr/bin/env bash
# The diffusers reference of docs/benchmarks.md on this machine's CPU: bench_diffusers.py (the seed's LoRA step done
# as diffusers' train_text_to_image_lora.py does it, random weights) on Debian's python3-torch 1.13.
#
# It needs a pure-Python Hugging Face stack that supports torch 1.13, on PYTHONPATH (REFERENCE_SITE):
#   diffusers 0.27.2, huggingface_hub 0.22.2, peft 0.10.0, accelerate 0.29.3, transformers 4.40.0
# With network access: pip install --target "$REFERENCE_SITE" --no-deps diffusers==0.27.2 huggingface_hub==0.22.2 \
#   peft==0.10.0 accelerate==0.29.3 transformers==4.40.0 safetensors
# Without (as on the CI machine, which has only Debian's registry): the same versions from their git tags, with a stub
# for safetensors (a Rust extension Debian lacks; the benchmark never reads or writes a file) and a
# <name>-<version>.dist-info/METADATA beside each package so that importlib.metadata's version checks pass.
#
# Usage: REFERENCE_SITE=/tmp/pyref/site:/tmp/pyref/stubs eng/reference/run-cpu.sh --tiny --device cpu --dtypes fp32 ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="${REFERENCE_SITE:?set REFERENCE_SITE to the folder(s) holding diffusers and friends}"
export PYTHONNOUSERSITE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
# Debian's torch 1.13 starts with one intra-op thread unless told; StableLora's libtorch uses every core. Same for both.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
exec /usr/bin/python3 "$here/bench_diffusers.py" "$@"
