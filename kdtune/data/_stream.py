"""Splits too large for memory, decoded from their files batch by batch: ``StreamedSplit``.

A ``StreamedSplit`` keeps only its labels in memory; its images come from a ``Source`` (an indexable
map-style ``torch.utils.data.Dataset`` giving (C, H, W) uint8 pixels) through a ``DataLoader`` with
worker processes, pinned memory when the training device is a GPU, and ``non_blocking`` copies. Its
``batches`` have the shape and order of an in-memory ``Split``'s: the same generator draws the same
permutation, so teacher logits cached by index and resumed runs line up. Pixels leave the workers as
uint8 (a quarter of float32's bytes to copy) and become float32 in [0, 1] on the device.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.context
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from kdtune.data._assemble import channel_stats, n_classes_of, split_plan
from kdtune.data._core import Batch, Dataset, Split
from kdtune.errors import DataError

log = logging.getLogger(__name__)
_STATS_BATCH = 256


class Source(Protocol):
    """Where a streamed split's pixels come from; picklable, so DataLoader workers and Ray workers get it."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> torch.Tensor: ...  # (C, H, W) uint8

    def subset(self, indices: Sequence[int]) -> Source: ...

    def update_hash(self, h: Any) -> None: ...  # what identifies the files (names, sizes, times), not pixels


class _Indexed(torch.utils.data.Dataset):
    """(pixels, index) pairs, so each batch carries the indices it holds."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.source[i], i


@dataclass(frozen=True, eq=False)
class StreamedSplit:
    """Labels in memory, images decoded from ``source`` by ``workers`` DataLoader processes per pass."""

    source: Source
    y: torch.Tensor  # (N,) int64 on the CPU
    input_shape: tuple[int, ...]  # (C, H, W)
    workers: int = 2
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        if len(self.source) != len(self.y):
            raise ValueError(f"StreamedSplit: {len(self.source)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> StreamedSplit:
        """The same split, its batches delivered to ``device`` (nothing is read now)."""
        return replace(self, device=torch.device(device))

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """(x, y, idx) on ``device``: shuffled with ``generator`` (the permutation a ``Split`` would draw),
        else in order; x float32 in [0, 1]."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if generator is not None:
            order = torch.randperm(len(self), generator=generator, device=generator.device).cpu()
        else:
            order = torch.arange(len(self))
        cuda = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            _Indexed(self.source), batch_sampler=[b.tolist() for b in order.split(batch_size)],
            num_workers=self.workers, pin_memory=cuda, multiprocessing_context=_context() if self.workers else None,
            generator=torch.Generator().manual_seed(0),  # its workers' seeds; torch's global RNG is left alone
        )  # fmt: skip
        try:
            for pixels, idx in loader:
                x = pixels.to(self.device, non_blocking=cuda).float().div_(255)
                yield x, self.y[idx].to(self.device, non_blocking=cuda), idx.to(self.device, non_blocking=cuda)
        except DataError as err:  # raised in a worker: DataLoader wraps it in its traceback
            raise DataError(_worker_message(err)) from None

    def head(self, n: int) -> Split:
        """The first ``n`` examples decoded into memory, on ``device``."""
        n = min(n, len(self))
        x = torch.stack([self.source[i] for i in range(n)]) if n else torch.empty((0, *self.input_shape),
                                                                                   dtype=torch.uint8)
        return Split(x.float().div_(255), self.y[:n].clone()).to(self.device)

    def update_hash(self, h: Any) -> None:
        h.update(f"|streamed{tuple(self.input_shape)}|".encode())
        self.source.update_hash(h)
        h.update(self.y.contiguous().numpy())


@functools.cache
def _context() -> multiprocessing.context.BaseContext:
    """Where DataLoader workers come from: a fork server, started once per process, that has imported
    kdtune's data loaders; so workers start fast and are never forked from a process running threads (the
    driver's Ray and MLflow threads, a Ray worker's), which can leave a forked child deadlocked or dead.
    Spawned where there is no fork server (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kdtune.data", "PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin"])
    return ctx


def _worker_message(err: DataError) -> str:
    """The error's own message: DataLoader re-raises a worker's exception with its traceback as the message,
    which ends in ``kdtune.errors.DataError: <message>``."""
    text, marker = str(err), f"{type(err).__module__}.{type(err).__name__}: "
    return text.rsplit(marker, 1)[1] if marker in text else text


def _mean_std(split: StreamedSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel population mean and std of the split's pixels, in one streamed pass (float64 sums)."""
    sums = torch.zeros(2, split.input_shape[0], dtype=torch.float64)
    n = 0
    for x, _, _ in split.batches(_STATS_BATCH):
        flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)  # (C, B·H·W)
        sums += torch.stack([flat.sum(1), flat.square().sum(1)])
        n += flat.shape[1]
    mean = sums[0] / n
    return mean.float(), (sums[1] / n - mean.square()).clamp_min(0).sqrt().float()


def assemble_streamed(
    name: str,
    splits: Mapping[str, tuple[Source, torch.Tensor]],
    *,
    input_shape: tuple[int, ...],
    val_fraction: float,
    test_fraction: float = 0.2,
    split_seed: int,
    mean: list[float] | None,
    std: list[float] | None,
    workers: int,
) -> Dataset:
    """As ``assemble``, with each split a ``StreamedSplit`` over its part of the given sources; the
    per-channel statistics, unless given, take one streamed pass over the train split."""
    plan = split_plan(name, {k: y for k, (_, y) in splits.items()}, val_fraction=val_fraction,
                      test_fraction=test_fraction, split_seed=split_seed)
    out = {}
    for split, (given, idx) in plan.items():
        source, y = splits[given]
        out[split] = StreamedSplit(source.subset(idx.tolist()), y[torch.from_numpy(idx)], tuple(input_shape), workers)
    channels = input_shape[0]
    computed = (torch.zeros(channels), torch.ones(channels))  # unused: both given
    if mean is None or std is None:
        log.info("dataset '%s': per-channel statistics computed in one streamed pass over %d training images",
                 name, len(out["train"]))
        computed = _mean_std(out["train"])
    stats = channel_stats(name, computed, mean, std)
    return Dataset(name, out["train"], out["val"], out["test"], n_classes=n_classes_of(splits),
                   input_shape=tuple(input_shape), mean=stats[0], std=stats[1])
