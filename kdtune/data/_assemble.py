"""Shared by the user-data loaders (``image_folder``, ``arrays``, ``torchvision:<Class>``): their common
parameters, PIL images to pixels, carving val/test from train, per-channel statistics and the choice
between memory and streaming.

Every loader ends in ``assemble``: tensors per split in, a ``Dataset`` with pixels in [0, 1] out.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch

from kdtune.data._core import Dataset, PositiveInt, Split, _reason, _stratified
from kdtune.errors import ConfigError, DataError

Fraction = Annotated[float, pydantic.Field(gt=0, lt=1)]
Pixel = Annotated[float, pydantic.Field(ge=0, le=1)]
Spread = Annotated[float, pydantic.Field(gt=0)]
Resize = tuple[PositiveInt, PositiveInt] | None  # (H, W)
Channels = Literal[1, 3] | None
Stream = bool | Literal["auto"]
Workers = Annotated[int, pydantic.Field(ge=0)]
MemoryGB = Annotated[float, pydantic.Field(gt=0)] | None

log = logging.getLogger(__name__)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # PIL modes -> 1 channel
_MIN_STD = 1e-6  # a constant channel or feature is left unscaled (std 1), as scikit-learn's StandardScaler does


def check_common(name: str) -> Callable[[dict[str, Any]], None]:
    """The load-time check of the parameters every user-data loader shares (``Registry.register(check=)``)."""

    def check(params: dict[str, Any]) -> None:
        if params.get("val_fraction", 0) + params.get("test_fraction", 0) >= 1:
            raise ConfigError(f"dataset '{name}': val_fraction + test_fraction must be below 1 (train keeps the "
                              "rest); lower them")
        channels = params.get("channels")
        for key in ("mean", "std"):
            given = params.get(key)
            if channels is not None and given is not None and len(given) not in (1, channels):
                raise ConfigError(f"dataset '{name}': {key} has {len(given)} values for channels: {channels}; "
                                  "give one per channel (or one for all)")

    return check


# ---------------------------------------------------------------- images


def image_channels(modes: set[str]) -> int:
    """1 when every PIL mode is a grayscale one, else 3."""
    return 1 if modes <= GRAY_MODES else 3


def pil_pixels(img: Any, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """A PIL image as (C, H, W) uint8: converted to L or RGB, resized (bilinear) when it is not ``size`` (H, W)."""
    img = img.convert("L" if channels == 1 else "RGB")
    if (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), resample=2)  # 2: PIL's BILINEAR, with its antialiasing
    pixels = torch.from_numpy(np.array(img, dtype=np.uint8))  # (H, W) or (H, W, C), as torchvision's pil_to_tensor
    return pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------- memory


def _machine_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no default limit
        return math.inf


def streams(name: str, n_values: int, *, stream: Stream, max_memory_gb: float | None) -> bool:
    """Whether to stream the data: ``stream`` when it is true or false; with ``auto``, whether its
    ``n_values`` float32 pixels pass ``max_memory_gb`` (by default a quarter of this machine's memory)."""
    if stream != "auto":
        return bool(stream)
    limit = max_memory_gb * 2**30 if max_memory_gb is not None else _machine_bytes() / 4
    need = 4 * n_values
    if need > limit:
        which = f"max_memory_gb={max_memory_gb:g}" if max_memory_gb is not None else (
            f"{limit / 2**30:.3g} GiB, a quarter of this machine's memory")
        log.info("dataset '%s': its splits take %.3g GiB as float32 tensors, more than %s: streamed from the files",
                 name, need / 2**30, which)
        return True
    return False


# ---------------------------------------------------------------- splits and statistics


def _carve(name: str, y: np.ndarray, missing: list[str], fractions: Mapping[str, float], seed: int) -> list[np.ndarray]:
    """Stratified index sets for each ``missing`` split (its fraction of train, at least one per class),
    then what train keeps."""
    n, k = len(y), len(np.unique(y))
    sizes = [max(k, round(fractions[s] * n)) for s in missing]
    carved = " and ".join(f"{s} ({size})" for s, size in zip(missing, sizes))
    if n - sum(sizes) < k:
        raise DataError(f"dataset '{name}': {n} training examples are too few to carve {carved} with each of the "
                        f"{k} classes in every split; add examples or provide the {' and '.join(missing)} split")
    try:
        return _stratified(y, [*sizes, n - sum(sizes)], seed)
    except ValueError as err:
        raise DataError(f"dataset '{name}': cannot carve {carved} from train stratified ({_reason(err)}); "
                        f"give every class more training examples or provide the split") from err


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 (/255) or floats in [0, 1] -> float32 in [0, 1]."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def _stats(name: str, key: str, given: list[float] | None, computed: torch.Tensor) -> tuple[float, ...]:
    n_channels = len(computed)
    if given is None:
        return tuple(float(v) for v in computed)
    if len(given) not in (1, n_channels):
        raise DataError(f"dataset '{name}': {key} has {len(given)} values for {n_channels} channels; "
                        "give one per channel (or one for all)")
    return tuple(float(v) for v in given) * (n_channels // len(given))


def split_plan(
    name: str, labels: Mapping[str, torch.Tensor], *, val_fraction: float, test_fraction: float, split_seed: int
) -> dict[str, tuple[str, np.ndarray]]:
    """{split: (the given split it is taken from, its indices there)} for train, val and test, from each
    given split's labels (``labels["train"]`` and ``"val"`` / ``"test"`` where given). A missing val or
    test is carved from train, stratified and seeded; a given split keeps all its examples in a seeded
    shuffled order (a folder lists its images class by class)."""
    every = torch.cat(list(labels.values()))
    n_classes = int(every.max()) + 1
    if int(every.min()) < 0 or n_classes < 2:
        raise DataError(f"dataset '{name}': labels must be class indices 0..K-1 with K >= 2, got "
                        f"{int(every.min())}..{n_classes - 1}; relabel the data")
    missing = [s for s in ("val", "test") if s not in labels]
    fractions = {"val": val_fraction, "test": test_fraction}
    carved = dict(zip([*missing, "train"], _carve(name, labels["train"].numpy(), missing, fractions, split_seed)))
    return {split: ("train", carved[split]) if split in carved
            else (split, np.random.default_rng(split_seed).permutation(len(labels[split])))
            for split in ("train", "val", "test")}


def channel_stats(
    name: str, computed: tuple[torch.Tensor, torch.Tensor], mean: list[float] | None, std: list[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: the given values, else the computed (mean, std) tensors (C,); a constant
    channel's std is 1."""
    mean_t, std_t = computed
    std_t = torch.where(std_t < _MIN_STD, torch.ones_like(std_t), std_t)
    return _stats(name, "mean", mean, mean_t), _stats(name, "std", std, std_t)


def assemble(
    name: str,
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    val_fraction: float,
    test_fraction: float = 0.2,
    split_seed: int,
    mean: list[float] | None,
    std: list[float] | None,
) -> Dataset:
    """``splits["train"]`` (and ``"val"`` / ``"test"`` where given) as a Dataset held in memory, split as
    ``split_plan`` says. x is (N, C, H, W) uint8 or floats in [0, 1], y (N,) int64 class indices. mean /
    std are per channel on the train split (what is left of it) unless given."""
    plan = split_plan(name, {k: y for k, (_, y) in splits.items()}, val_fraction=val_fraction,
                      test_fraction=test_fraction, split_seed=split_seed)
    out = {}
    for split, (source, idx) in plan.items():
        sx, sy = splits[source]
        idx_t = torch.from_numpy(idx)
        out[split] = Split(_pixels(sx[idx_t]), sy[idx_t])
    std_t, mean_t = torch.std_mean(out["train"].x, dim=(0, 2, 3), correction=0)  # (C,) each
    stats = channel_stats(name, (mean_t, std_t), mean, std)
    return Dataset(
        name, out["train"], out["val"], out["test"], n_classes=n_classes_of(splits),
        input_shape=tuple(out["train"].x.shape[1:]), mean=stats[0], std=stats[1],
    )  # fmt: skip


def n_classes_of(splits: Mapping[str, tuple[Any, torch.Tensor]]) -> int:
    """K, from the largest label of any split."""
    return int(torch.cat([y for _, y in splits.values()]).max()) + 1
