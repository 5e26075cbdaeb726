"""CIFAR-10 through torchvision (or the standard python batches when ``verify: false``)."""

from __future__ import annotations

import os
import pickle
import tarfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdtune.data._core import (
    _CIFAR10_TRAIN_SIZE,
    _N_CLASSES,
    DEFAULT_ROOT,
    Dataset,
    PositiveInt,
    Seed,
    _check_sizes,
    _official_splits,
    _reason,
)
from kdtune.data._registry import DATASETS
from kdtune.errors import DataError

# ---------------------------------------------------------------- CIFAR-10 (torchvision)
#
# Integrity: torchvision's CIFAR10 checks the MD5 of every batch file (and batches.meta) before it
# unpickles them, which is also what makes its plain ``pickle.load`` safe. With ``verify: true`` (the
# default) we load through torchvision and keep both guarantees. ``verify: false`` is for files that are
# not byte-identical to the official ones (re-pickled batches, a subset, the tests' tiny batches): we
# read the standard python batch format ourselves (data_batch_1..5, test_batch: a pickled dict with
# 'data' (N, 3072) uint8, 1024 R then G then B values in row-major 32x32 order, and 'labels'), with an
# unpickler that only accepts numpy arrays, so an unverified file cannot run code.

_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_TEST = ("test_batch",)
_PICKLE_GLOBALS = {  # all that pickled numpy arrays (numpy 1 or 2, protocols 2-5) need; all harmless
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((f"numpy.{core}.{mod}", fn) for core in ("core", "_core")
      for mod, fn in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))),
}  # fmt: skip


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy-1 pickles under numpy 2
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _read_cifar_batch(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One python batch as (N, 3, 32, 32) uint8 and (N,) int64; DataError if it is not one."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()  # latin1: Python 2 pickles (the originals)
        fields = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}
        data, labels = fields["data"], np.asarray(fields["labels"])
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            raise ValueError(f"'data' must be (N, 3072) uint8, got {getattr(data, 'shape', type(data).__name__)}")
        if (
            labels.shape != (len(data),)
            or labels.dtype.kind not in "iu"
            or not ((labels >= 0) & (labels < _N_CLASSES)).all()
        ):
            raise ValueError(f"'labels' must be {len(data)} integers in 0..{_N_CLASSES - 1}")
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, TypeError, ValueError) as err:
        raise DataError(
            f"dataset 'cifar10': {path} is not a CIFAR-10 python batch ({_reason(err)}); "
            "replace it with the original file"
        ) from err
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels.astype(np.int64))  # (N, 3, H, W)


def _read_cifar_batches(folder: str, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The named batches, concatenated in order."""
    xs, ys = zip(*(_read_cifar_batch(os.path.join(folder, f)) for f in files))
    return torch.cat(xs), torch.cat(ys)


def _read_cifar10(root: str, *, download: bool, verify: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(train x, y), (test x, y)] with uint8 (N, 3, 32, 32) images, with a DataError on any failure."""
    from torchvision.datasets import CIFAR10

    folder = os.path.join(root, _CIFAR10_FOLDER)
    expected = [*_CIFAR10_TRAIN, *_CIFAR10_TEST, *([CIFAR10.meta["filename"]] if verify else [])]
    fix = f"copy the extracted python batches ({', '.join(expected)}) there"
    if download:
        try:
            CIFAR10(root, train=False, download=True)  # fetches and checks the archive, then every file
        except (RuntimeError, OSError, ValueError, EOFError, tarfile.TarError) as err:
            raise DataError(
                f"dataset 'cifar10': download to {folder} failed ({_reason(err)}); "
                f"without internet, {fix} and set dataset.download: false"
            ) from err
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        which = "" if len(missing) == len(expected) else f" (missing {', '.join(missing)})"
        raise DataError(
            f"dataset 'cifar10': files not found under {folder}{which}; "
            f"{fix} or set dataset.download: true on a machine with internet"
        )
    if not verify:
        return [_read_cifar_batches(folder, files) for files in (_CIFAR10_TRAIN, _CIFAR10_TEST)]
    try:
        splits = [CIFAR10(root, train=train) for train in (True, False)]
    except (RuntimeError, OSError) as err:
        raise DataError(
            f"dataset 'cifar10': the files under {folder} do not match the official CIFAR-10 checksums "
            f"({_reason(err)}); replace them with the original files, "
            "or set dataset.verify: false to read them as they are"
        ) from err
    return [(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)) for ds in splits]


def _cifar10_sizes(params: Mapping[str, Any]) -> None:
    kept = f"{_CIFAR10_TRAIN_SIZE} official training images less {_N_CLASSES} kept for train"
    _check_sizes("cifar10", {"n_val": params["n_val"]}, _CIFAR10_TRAIN_SIZE - _N_CLASSES, kept)


@DATASETS.register("cifar10", check=_cifar10_sizes)
def cifar10(
    *,
    root: str = DEFAULT_ROOT,
    download: bool = False,
    n_val: PositiveInt = 5000,
    split_seed: Seed = 0,
    verify: bool = True,
) -> Dataset:
    """CIFAR-10 via torchvision (Krizhevsky 2009; 50k train / 10k test, 32x32 RGB); stratified train/val.

    ``verify: false`` skips the MD5 check of the batch files (see the note above ``_BatchUnpickler``).
    """
    root = os.path.expanduser(root)
    train, test = _read_cifar10(root, download=download, verify=verify)
    return _official_splits("cifar10", train, test, n_val=n_val, split_seed=split_seed)

