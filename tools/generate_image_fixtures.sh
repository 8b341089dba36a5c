#!/usr/bin/env bash
# Regenerates the image fixtures that ImageSharp 2.1 cannot write itself (tests/StableLora.Tests/Fixtures/images):
# a CMYK JPEG (Adobe APP14, as Photoshop writes them) and animated WebPs (lossless; lossy with an alpha channel and a
# transparent bottom-right quadrant; and one whose first frame is an 8x8 red square at (4, 4) of a 16x16 canvas).
# The others show the same 16x16 pattern as the in-test images: red top-left, green top-right, blue bottom-left,
# white bottom-right quadrant; their second frame is black.
# Needs Debian's imagemagick and webp packages (apt-get install imagemagick webp); CI does not: the files are committed.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/tests/StableLora.Tests/Fixtures/images"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
convert=/usr/bin/convert-im6.q16

"$convert" -size 8x8 xc:'#ff0000' -size 8x8 xc:'#00ff00' +append "$work/top.png"
"$convert" -size 8x8 xc:'#0000ff' -size 8x8 xc:'#ffffff' +append "$work/bottom.png"
"$convert" "$work/top.png" "$work/bottom.png" -append -define png:color-type=2 "$work/quadrants.png"
"$convert" -size 16x16 xc:'#000000' -define png:color-type=2 "$work/black.png"
"$convert" "$work/quadrants.png" -alpha set -region 8x8+8+8 -alpha transparent +region -define png:color-type=6 "$work/quadrants-alpha.png"
"$convert" -size 8x8 xc:'#ff0000' -define png:color-type=2 "$work/small.png"

"$convert" "$work/quadrants.png" -colorspace CMYK -sampling-factor 1x1 -quality 100 -strip "$out/cmyk.jpg"
img2webp -lossless -d 100 "$work/quadrants.png" "$work/black.png" -o "$out/animated.webp" >/dev/null
img2webp -lossy -q 100 -d 100 "$work/quadrants-alpha.png" "$work/black.png" -o "$out/animated-lossy-alpha.webp" >/dev/null
cwebp -quiet -lossless "$work/small.png" -o "$work/small.webp"
cwebp -quiet -lossless "$work/black.png" -o "$work/black.webp"
webpmux -frame "$work/small.webp" +100+4+4 -frame "$work/black.webp" +100+0+0 -loop 0 -o "$out/animated-offset.webp"

"$convert" -version | head -1
img2webp -version | head -1
identify "$out/cmyk.jpg" "$out"/animated*.webp || true
