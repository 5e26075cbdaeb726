"""scikit-learn's 8x8 digits (offline)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdtune.data._core import (
    _DIGITS_SIZE,
    _N_CLASSES,
    _STATS,
    Dataset,
    PositiveInt,
    Seed,
    Split,
    _check_sizes,
    _stratified,
)
from kdtune.data._registry import DATASETS

# ---------------------------------------------------------------- digits (offline)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797, 8, 8) float32 in [0, 1] (values 0..16 / 16) and (1797,) int64."""
    from sklearn.datasets import load_digits  # lazy: a slow import (docs/performance.md)

    bunch = load_digits()
    return (bunch.images / 16).astype(np.float32), bunch.target.astype(np.int64)


def _digits_sizes(params: Mapping[str, Any]) -> None:
    sizes = {k: params[k] for k in ("n_val", "n_test")}
    kept = f"{_DIGITS_SIZE} images less {_N_CLASSES} kept for train"
    _check_sizes("digits", sizes, _DIGITS_SIZE - _N_CLASSES, kept)


@DATASETS.register("digits", check=_digits_sizes)
def digits(*, n_val: PositiveInt = 300, n_test: PositiveInt = 360, split_seed: Seed = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (UCI optdigits' 1,797-image test set; offline); stratified splits.

    val and test are stratified, train is the rest; pixels are the 0..16 counts / 16.
    UCI optdigits: Alpaydin & Kaynak 1998.
    """
    _digits_sizes({"n_val": n_val, "n_test": n_test})
    x, y = _digits_arrays()
    parts = _stratified(y, [n_val, n_test, len(y) - n_val - n_test], split_seed)
    val, test, train = (Split(torch.from_numpy(x[idx]).unsqueeze(1), torch.from_numpy(y[idx])) for idx in parts)
    info = _STATS["digits"]
    return Dataset(
        "digits", train, val, test, n_classes=_N_CLASSES, input_shape=(1, 8, 8), mean=info.mean, std=info.std
    )


