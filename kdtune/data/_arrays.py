"""``arrays``: the user's data as a NumPy ``.npz`` archive.

Arrays ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val`` (else val is carved from train).
x is (N, C, H, W), or (N, D) which becomes (N, D, 1, 1): each feature a channel, so normalisation is per
feature and ``mlp`` reads it as D inputs; uint8 (divided by 255) or floats in [0, 1]. y holds class
indices 0..K-1. The archive is read with ``allow_pickle=False``: it cannot run code.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from kdtune.data._assemble import (
    Fraction,
    MemoryGB,
    Pixel,
    Spread,
    Stream,
    assemble,
    check_common,
    streams,
)
from kdtune.data._core import Dataset, Seed, _reason, checks_files
from kdtune.data._registry import DATASETS
from kdtune.errors import DataError
from kdtune.registry import did_you_mean

NAME = "arrays"
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val")
_SAVE = "save it with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...) (x_val, y_val optional)"
_CHUNK = 2**24  # bytes read at a time when scanning an array's values


def _header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, dtype


def _members(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype, from the .npy headers (nothing loaded)."""
    if not os.path.isfile(path):
        raise DataError(f"dataset '{NAME}': no file at {path}; check path, or {_SAVE}")
    try:
        with zipfile.ZipFile(path) as archive:
            out = {}
            for member in archive.namelist():
                if member.endswith(".npy"):
                    with archive.open(member) as f:
                        out[member.removesuffix(".npy")] = _header(f)
            return out
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DataError(f"dataset '{NAME}': {path} is not a NumPy .npz archive ({_reason(err)}); {_SAVE}") from err


def _layout_error(path: str, members: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str | None:
    """What is wrong with the archive's names, shapes and dtypes, or None."""
    missing = [k for k in REQUIRED if k not in members]
    if missing:
        return f"{path} lacks {', '.join(missing)}; {_SAVE}"
    unknown = [k for k in members if k.startswith(("x_", "y_")) and k not in REQUIRED + OPTIONAL]
    if unknown:
        hint = did_you_mean(unknown[0], list(REQUIRED + OPTIONAL))
        return f"{path} has an array '{unknown[0]}'{hint}; rename it (kdtune reads {', '.join(REQUIRED + OPTIONAL)})"
    if ("x_val" in members) != ("y_val" in members):
        return f"{path} has only one of x_val and y_val; give both or neither (val is then carved from train)"
    splits = [s for s in ("train", "val", "test") if f"x_{s}" in members]
    features = {members[f"x_{s}"][0][1:] for s in splits}
    for s in splits:
        (xs, xt), (ys, yt) = members[f"x_{s}"], members[f"y_{s}"]
        if len(xs) not in (2, 4) or xs[0] == 0 or len(features) > 1:
            return f"x_{s} is {xs}; every x must be (N, C, H, W) or (N, D), N > 0, with the same C, H, W or D"
        if not (xt == np.uint8 or xt.kind == "f"):
            return f"x_{s} is {xt}; save uint8 pixels (0..255) or floats in [0, 1]"
        if ys != (xs[0],) or yt.kind not in "iu":
            return f"y_{s} is {yt} {ys}; it must hold {xs[0]} integer class indices, one per row of x_{s}"
    return None


def _chunks(path: str, key: str) -> Iterator[np.ndarray]:
    """The values of one array, ``_CHUNK`` bytes at a time (order does not matter to a range)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
        shape, dtype = _header(f)
        per, left = max(1, _CHUNK // dtype.itemsize), math.prod(shape)
        while left > 0:
            n = min(per, left)
            yield np.frombuffer(f.read(n * dtype.itemsize), dtype=dtype)
            left -= n


def _range_error(key: str, chunks: Iterable[np.ndarray]) -> str | None:
    """x floats must lie in [0, 1], y must be >= 0; what is wrong, or None."""
    lo, hi = math.inf, -math.inf
    for chunk in chunks:
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if key.startswith("x_") and not (0.0 <= lo and hi <= 1.0):  # NaN fails this too
        return f"{key} holds values in [{lo:g}, {hi:g}], outside [0, 1]; scale floats to [0, 1] or save uint8 pixels"
    if key.startswith("y_") and lo < 0:
        return f"{key} holds label {lo:g}; relabel the classes as indices 0..K-1"
    return None


def _check_layout(path: str, members: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    problem = _layout_error(path, members)
    if problem:
        raise DataError(f"dataset '{NAME}': {problem}")


def _check_values(members: dict[str, tuple[tuple[int, ...], np.dtype]], values: Any) -> None:
    """Float x in [0, 1], y >= 0; ``values(key)`` gives an array's values as chunks."""
    keys = [k for k in REQUIRED + OPTIONAL if k in members and (k.startswith("y_") or members[k][1].kind == "f")]
    problem = next((p for k in keys if (p := _range_error(k, values(k)))), None)
    if problem:
        raise DataError(f"dataset '{NAME}': {problem}")


def _check_size(members: dict[str, tuple[tuple[int, ...], np.dtype]], params: dict[str, Any]) -> None:
    n = sum(members[f"x_{s}"][0][0] for s in ("train", "val", "test") if f"x_{s}" in members)
    n_values = n * math.prod(members["x_train"][0][1:])
    if streams(NAME, n_values, stream=params["stream"], max_memory_gb=params["max_memory_gb"]):
        over = "stream: true" if params["stream"] is True else f"its {4 * n_values / 2**30:.3g} GiB as float32"
        raise DataError(f"dataset '{NAME}': {over} cannot stream: an .npz archive is read whole into memory; write "
                        "the images to an image_folder (streamed from its files), or set stream: false to load it "
                        "anyway")


def _check_files(params: dict[str, Any]) -> None:
    path = os.path.expanduser(params["path"])
    members = _members(path)
    _check_layout(path, members)
    _check_values(members, lambda key: _chunks(path, key))
    _check_size(members, params)


def _native(a: np.ndarray) -> torch.Tensor:
    """A tensor over ``a`` in native byte order (torch reads no other)."""
    return torch.from_numpy(a.astype(a.dtype.newbyteorder("="), copy=False))


@DATASETS.register(NAME, check=check_common(NAME))
@checks_files(_check_files)
def arrays(
    *,
    path: str,
    val_fraction: Fraction = 0.1,
    split_seed: Seed = 0,
    mean: list[Pixel] | None = None,
    std: list[Spread] | None = None,
    stream: Stream = "auto",
    max_memory_gb: MemoryGB = None,
) -> Dataset:
    """Your arrays in a .npz (x_train, y_train, x_test, y_test; x_val, y_val optional); stats on train.

    x (N, C, H, W) or (N, D) -> (N, D, 1, 1); uint8 or floats in [0, 1]; y class indices. No x_val: val is
    carved from train (``val_fraction``, stratified, ``split_seed``). mean / std per channel on train unless
    given. An archive is read whole: ``stream: auto`` refuses data above ``max_memory_gb`` (default: a quarter
    of the machine's memory), ``stream: false`` loads it anyway; ``image_folder`` streams.
    """
    path = os.path.expanduser(path)
    members = _members(path)
    _check_layout(path, members)
    _check_size(members, {"stream": stream, "max_memory_gb": max_memory_gb})
    with np.load(path, allow_pickle=False) as archive:
        data = {k: archive[k] for k in REQUIRED + OPTIONAL if k in members}
    _check_values(members, lambda key: [data[key]])
    splits = {}
    for s in ("train", "val", "test"):
        if f"x_{s}" in data:
            x = data[f"x_{s}"]
            x = x.reshape(*x.shape, 1, 1) if x.ndim == 2 else x  # (N, D) -> (N, D, 1, 1)
            splits[s] = (_native(x), _native(data[f"y_{s}"]).long())
    return assemble(NAME, splits, val_fraction=val_fraction, split_seed=split_seed, mean=mean, std=std)
