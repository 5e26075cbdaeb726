"""Shared by the user-data loaders (``image_folder``, ``arrays``, ``torchvision:<Class>``): their common
parameters, PIL images to pixels, carving val/test from train, per-channel statistics and the memory limit.

Every loader ends in ``assemble``: tensors per split in, a ``Dataset`` with pixels in [0, 1] out.
"""

from __future__ import annotations

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
MemoryGB = Annotated[float, pydantic.Field(gt=0)] | None

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # PIL modes -> 1 channel
_MIN_STD = 1e-6  # a constant channel or feature is left unscaled (std 1), as scikit-learn's StandardScaler does


def check_common(name: str) -> Callable[[dict[str, Any]], None]:
    """The load-time check of the parameters every user-data loader shares (``Registry.register(check=)``)."""

    def check(params: dict[str, Any]) -> None:
        if params.get("stream") is True:
            raise ConfigError(f"dataset '{name}': stream: true is not supported yet (training takes in-memory "
                              "tensors); set stream: auto (the default) or false")
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
    from torchvision.transforms.functional import pil_to_tensor

    img = img.convert("L" if channels == 1 else "RGB")
    if (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), resample=2)  # 2: PIL's BILINEAR, with its antialiasing
    return pil_to_tensor(img)  # (C, H, W) uint8


# ---------------------------------------------------------------- memory


def _machine_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no default limit
        return math.inf


def check_memory(name: str, n_values: int, *, stream: Stream, max_memory_gb: float | None) -> None:
    """DataError when ``n_values`` float32 pixels pass the limit (``max_memory_gb``, by default a quarter of
    this machine's memory) and ``stream`` is ``auto``; ``stream: false`` loads whatever the size."""
    if stream is False:
        return
    limit = max_memory_gb * 2**30 if max_memory_gb is not None else _machine_bytes() / 4
    need = 4 * n_values
    if need > limit:
        which = f"max_memory_gb={max_memory_gb:g}" if max_memory_gb is not None else (
            f"{limit / 2**30:.3g} GiB, a quarter of this machine's memory")
        raise DataError(
            f"dataset '{name}': its splits take {need / 2**30:.3g} GiB as float32 tensors, more than "
            f"{which}; streaming larger data is not supported yet: "
            "raise max_memory_gb or set stream: false to load it anyway, or use smaller images (resize: [H, W])"
        )


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
    """``splits["train"]`` (and ``"val"`` / ``"test"`` where given) as a Dataset; a missing val or test is
    carved from train, stratified and seeded. x is (N, C, H, W) uint8 or floats in [0, 1], y (N,) int64
    class indices. mean / std are per channel on the train split (what is left of it) unless given."""
    labels = torch.cat([y for _, y in splits.values()])
    n_classes = int(labels.max()) + 1
    if int(labels.min()) < 0 or n_classes < 2:
        raise DataError(f"dataset '{name}': labels must be class indices 0..K-1 with K >= 2, got "
                        f"{int(labels.min())}..{n_classes - 1}; relabel the data")
    x, y = splits["train"]
    missing = [s for s in ("val", "test") if s not in splits]
    fractions = {"val": val_fraction, "test": test_fraction}
    parts = dict(zip([*missing, "train"], _carve(name, y.numpy(), missing, fractions, split_seed)))
    out = {}
    for split in ("train", "val", "test"):
        if split in parts:
            sx, sy, idx = x, y, parts[split]
        else:  # a given split, in a seeded shuffled order too: a folder lists its images class by class
            (sx, sy), idx = splits[split], np.random.default_rng(split_seed).permutation(len(splits[split][1]))
        idx_t = torch.from_numpy(idx)
        out[split] = Split(_pixels(sx[idx_t]), sy[idx_t])
    std_t, mean_t = torch.std_mean(out["train"].x, dim=(0, 2, 3), correction=0)  # (C,) each
    std_t = torch.where(std_t < _MIN_STD, torch.ones_like(std_t), std_t)
    return Dataset(
        name, out["train"], out["val"], out["test"], n_classes=n_classes,
        input_shape=tuple(out["train"].x.shape[1:]),
        mean=_stats(name, "mean", mean, mean_t), std=_stats(name, "std", std, std_t),
    )  # fmt: skip
