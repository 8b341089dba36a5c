#!/usr/bin/env bash
# How long training waits for its images: a folder of large JPEGs (12 MP, as phones write them), made from the photo
# fixtures, trained on with the tiny test model (whose step takes milliseconds, so any decoding cost shows as a wait)
# at two resolutions, each printing the total wait. (Kept small: the tiny VAE downsamples only 2x, so its attention
# at 512 px would span 65536 positions, and 24 steps at 128 px already take ten minutes on 2 cores.)
# Usage: [RESOLUTIONS="64 32"] bash eng/bench-data-wait.sh [images] [steps]   (needs /usr/bin/python3 with PIL; a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-16}
steps=${2:-24}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

/usr/bin/python3 - "$work/jpegs" "$images" <<'PY'
import os, sys, glob
from PIL import Image
out, count = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
photos = sorted(p for p in glob.glob("tests/StableLora.Tests/Fixtures/photos/*") if p.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
for i in range(count):
    with Image.open(photos[i % len(photos)]) as photo:
        size = (4032, 3024) if i % 3 else (3024, 4032)
        photo.convert("RGB").resize(size, Image.BICUBIC).save(os.path.join(out, f"img{i:03d}.jpg"), quality=92)
PY
du -sh "$work/jpegs"
cli() { dotnet run --project src/StableLora.Samples -c Release --no-build -- "$@"; }
for resolution in ${RESOLUTIONS:-64 32}; do
  echo "== tiny model, resolution $resolution, batch 2, $steps steps"
  cli train --model tests/StableLora.Tests/Fixtures/tiny-sd/pipeline --data "$work/jpegs" --output "$work/out-$resolution" \
    --resolution "$resolution" --batch-size 2 --max-steps "$steps" --warmup-steps 0 --checkpoint-every 0 --device cpu | grep -E "Trained|Waited"
done
