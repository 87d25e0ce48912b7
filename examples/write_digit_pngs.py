"""Write a few of scikit-learn's bundled 8x8 digits as PNG files, for `cnnspec predict`.

    python examples/write_digit_pngs.py runs/digit_images [COUNT]

The digits' values (0-16) are scaled to 0-255 grey; each file is named after its true label.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main(argv: list[str]) -> None:
    folder = Path(argv[0] if argv else "runs/digit_images")
    count = int(argv[1]) if len(argv) > 1 else 5
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    # The last images: the digits spec's stratified test split is random, so these may have
    # been seen in training; they show the pipeline, not the accuracy.
    for index in range(len(digits.images) - count, len(digits.images)):
        pixels = (digits.images[index] * 255 / 16).round().astype(np.uint8)
        path = folder / f"digit_{index}_label_{digits.target[index]}.png"
        Image.fromarray(pixels, mode="L").save(path)
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
