"""Small user datasets written by the tests: an ImageFolder tree of PNGs and a .npz archive, each
returning exactly what it wrote, so the loaded splits can be checked against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(
    root: Path,
    *,
    splits: tuple[str, ...] = ("train",),
    classes: tuple[str, ...] = ("a", "b", "c"),
    n_per_class: int = 6,
    size: tuple[int, int] = (8, 8),
    mode: str = "L",
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/<split>/<class>/NN.png`` random images; {split: (x (N, C, H, W) uint8, y (N,))} in
    ImageFolder's order (classes sorted, then file names)."""
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    written: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in splits:
        xs, ys = [], []
        for label, cls in enumerate(sorted(classes)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n_per_class):
                pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:02d}.png")
                xs.append(pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None])  # (C, H, W)
                ys.append(label)
        written[split] = (np.stack(xs), np.array(ys))
    return written


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """``arrays`` saved as a NumPy .npz archive at ``path``."""
    np.savez(path, **arrays)
    return path


def labelled(n: int, n_classes: int, shape: tuple[int, ...], *, seed: int, floats: bool = False) -> tuple:
    """(x, y): ``n`` random examples of ``shape`` (uint8, or float32 in [0, 1]), labels cycling 0..K-1."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32) if floats else rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return x, np.arange(n) % n_classes
