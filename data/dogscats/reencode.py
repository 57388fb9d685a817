#!/usr/bin/env python3
"""Makes this folder's photos from the originals in ../shared/data/dogscats:
each image is resized so that its shorter side is 160 px (Lanczos, aspect
kept) and saved as a baseline JPEG at quality 90, under the same
split/class/file name. Needs Pillow.

    python3 data/dogscats/reencode.py ../shared/data/dogscats data/dogscats
"""

import os
import sys

from PIL import Image

SHORT_SIDE = 160


def main(src, dst):
    count = 0
    for split in ("train", "valid"):
        for cls in ("cats", "dogs"):
            folder = os.path.join(src, split, cls)
            out = os.path.join(dst, split, cls)
            os.makedirs(out, exist_ok=True)
            for name in sorted(os.listdir(folder)):
                with Image.open(os.path.join(folder, name)) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    scale = SHORT_SIDE / min(w, h)
                    size = (max(1, round(w * scale)), max(1, round(h * scale)))
                    im.resize(size, Image.LANCZOS).save(os.path.join(out, name), "JPEG", quality=90)
                count += 1
    print(f"{count} images written to {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
