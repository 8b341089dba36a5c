#!/usr/bin/env python3
"""Builds tests/StableLora.Tests/Fixtures/photos: ten real photographs of mixed sizes, aspect ratios and formats
(JPEG and PNG; RGB, grayscale, palette, RGBA) for tests that train on ordinary photos.

The sources are scikit-image's sample images as Debian packages them (python3-skimage 0.19.3-8), each public domain
or CC0 (see the README this script writes). Run with Debian's python3 and Pillow:

    apt-get download python3-skimage && dpkg-deb -x python3-skimage_*.deb /tmp/skimg
    /usr/bin/python3 tools/make_photo_fixtures.py /tmp/skimg/usr/lib/python3/dist-packages/skimage/data
"""
import os
import sys

from PIL import Image

SOURCE = sys.argv[1]
DEST = os.path.join(os.path.dirname(__file__), "..", "tests", "StableLora.Tests", "Fixtures", "photos")

# (output name, source file, licence, transform)
PHOTOS = [
    ("astronaut.jpg", "astronaut.png", "public domain (NASA)", lambda im: im.convert("RGB")),
    ("coffee.png", "coffee.png", "CC0 (Rachel Michetti)", lambda im: im.convert("RGB")),
    ("chelsea-palette.png", "chelsea.png", "CC0 (Stefan van der Walt)", lambda im: im.convert("RGB").quantize(64)),
    ("camera-gray.png", "camera.png", "CC0 (Lav Varshney)", lambda im: im.convert("L").resize((400, 400), Image.LANCZOS)),
    ("rocket.jpg", "rocket.jpg", "public domain (SpaceX)", lambda im: im.convert("RGB")),
    ("hubble.jpg", "hubble_deep_field.jpg", "public domain (NASA)", lambda im: im.convert("RGB").resize((610, 700), Image.LANCZOS)),
    ("retina.jpg", "retina.jpg", "CC0 (Mikael Haggstrom)", lambda im: im.convert("RGB").resize((800, 800), Image.LANCZOS)),
    ("coins-gray.jpg", "coins.png", "no known copyright restrictions (Brooklyn Museum)", lambda im: im.convert("L")),
    ("brick-wide.png", "brick.png", "CC0 (CC0Textures)", lambda im: im.convert("RGB").crop((0, 100, 512, 292)).resize((800, 300), Image.LANCZOS)),
    ("coffee-alpha.png", "coffee.png", "CC0 (Rachel Michetti)", lambda im: with_alpha(im.convert("RGB").resize((450, 300), Image.LANCZOS))),
]


def with_alpha(im):
    """An RGBA image whose left third is transparent (a masked-out region)."""
    rgba = im.convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, rgba.size[0] // 3, rgba.size[1]))
    rgba.putalpha(alpha)
    return rgba


def main():
    os.makedirs(DEST, exist_ok=True)
    rows = []
    for name, source, licence, transform in PHOTOS:
        image = transform(Image.open(os.path.join(SOURCE, source)))
        path = os.path.join(DEST, name)
        if name.endswith(".jpg"):
            image.save(path, quality=85)
        else:
            image.save(path, optimize=True)
        rows.append(f"| `{name}` | {image.size[0]}x{image.size[1]} | {image.mode} | scikit-image `{source}` | {licence} |")
    with open(os.path.join(DEST, "README.md"), "w") as f:
        f.write("# Photos\n\nTen real photographs of mixed sizes, aspect ratios and formats, made by `tools/make_photo_fixtures.py` "
                "from scikit-image's sample data (Debian python3-skimage 0.19.3-8). Each is public domain or CC0, as "
                "scikit-image's `skimage/data/_fetchers.py` documents for its source image.\n\n"
                "| file | size | mode | source | licence |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


main()
