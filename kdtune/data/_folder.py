"""``image_folder``: the user's images in torchvision's ImageFolder layout, ``root/train/<class>/*.png``.

``root/val/`` and ``root/test/`` are used when present, else carved from train (stratified, seeded).
Classes are the folder names (sorted, as ImageFolder numbers them) and must be the same in every split.
Any image format PIL opens; channels are 1 when every image is grayscale, else 3, unless given; all
images must have one size unless ``resize: [H, W]`` is given.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from kdtune.data._assemble import (
    Channels,
    Fraction,
    MemoryGB,
    Pixel,
    Resize,
    Spread,
    Stream,
    Workers,
    assemble,
    check_common,
    image_channels,
    pil_pixels,
    streams,
)
from kdtune.data._core import Dataset, Seed, _reason, checks_files
from kdtune.data._registry import DATASETS
from kdtune.data._stream import assemble_streamed
from kdtune.errors import DataError

NAME = "image_folder"
SPLITS = ("train", "val", "test")
_LAYOUT = "lay the images out as ROOT/train/<class>/*.png (optional ROOT/val/, ROOT/test/)"


def _classes(directory: str) -> list[str]:
    """The class folders in ``directory``, sorted; hidden ones (``.ipynb_checkpoints``) left out."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def _image_folder(directory: str) -> Any:
    """torchvision's ImageFolder over ``directory``: every file PIL can open, hidden files and folders
    (``.DS_Store``, ``.ipynb_checkpoints``) left out; a class folder may be empty (checked by the caller)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    Image.init()
    extensions = tuple(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)

    class _Folder(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes = _classes(directory)
            return classes, {c: i for i, c in enumerate(classes)}

    def readable(path: str) -> bool:
        return not os.path.basename(path).startswith(".") and path.lower().endswith(extensions)

    return _Folder(directory, is_valid_file=readable, allow_empty=True)


def _folders(root: str) -> dict[str, Any]:
    """{"train": ImageFolder, "val"?: ..., "test"?: ...}, every split with images in every class, the same classes."""
    root = os.path.abspath(os.path.expanduser(root))  # streamed files are opened from other working directories
    if not os.path.isdir(root):
        raise DataError(f"dataset '{NAME}': root {root} is not a folder; {_LAYOUT} and point root at ROOT")
    if not os.path.isdir(os.path.join(root, "train")):
        raise DataError(f"dataset '{NAME}': {root} has no train/ folder; {_LAYOUT}")
    folders = {}
    for split in [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]:
        where = os.path.join(root, split)
        if not _classes(where):
            raise DataError(f"dataset '{NAME}': {where} holds no class folders; {_LAYOUT}")
        folders[split] = folder = _image_folder(where)
        empty = sorted(set(folder.classes) - {folder.classes[t] for t in folder.targets})
        if empty:
            raise DataError(f"dataset '{NAME}': class folder(s) {', '.join(empty)} in {where} hold no image PIL "
                            "can open; add images or remove the folder(s)")
        missing = sorted(set(folders["train"].classes) - set(folder.classes))
        extra = sorted(set(folder.classes) - set(folders["train"].classes))
        if missing or extra:
            diff = "; ".join(f"{k}: {', '.join(v)}" for k, v in (("missing", missing), ("extra", extra)) if v)
            raise DataError(f"dataset '{NAME}': the classes of {where} differ from train/'s ({diff}); give every "
                            "split the same class folders")
    return folders


def _headers(folder: Any) -> list[tuple[str, str, tuple[int, int]]]:
    """(path, PIL mode, (H, W)) of every image, from its header (nothing decoded)."""
    from PIL import Image

    out = []
    for path, _ in folder.samples:
        try:
            with Image.open(path) as img:
                out.append((path, img.mode, (img.height, img.width)))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"dataset '{NAME}': cannot read {path} as an image ({_reason(err)}); "
                            "replace or remove it") from err
    return out


def _size(headers: list[tuple[str, str, tuple[int, int]]]) -> tuple[int, int]:
    """The one (H, W) every image has; DataError naming two that differ."""
    first_path, _, first = headers[0]
    for path, _, size in headers:
        if size != first:
            raise DataError(f"dataset '{NAME}': images differ in size ({first_path} is {first[0]}x{first[1]}, "
                            f"{path} is {size[0]}x{size[1]}); give resize: [H, W] to bring them all to one size")
    return first


class ImageFiles:
    """A streamed split's ``Source``: image files decoded one by one to (C, H, W) uint8 (``channels``,
    resized to ``size`` where they differ)."""

    def __init__(self, paths: list[str], channels: int, size: tuple[int, int]) -> None:
        self.paths, self.channels, self.size = paths, channels, tuple(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as img:
                return pil_pixels(img, self.channels, self.size)
        except (OSError, ValueError) as err:
            raise DataError(f"dataset '{NAME}': cannot decode {path} ({_reason(err)}); replace or remove it") from err

    def subset(self, indices: list[int]) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in indices], self.channels, self.size)

    def update_hash(self, h: Any) -> None:
        """Each file's path, size and modification time (no pixels: a streamed set is not read to be named)."""
        h.update(f"|{self.channels}{self.size}|".encode())
        for path in self.paths:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns};".encode())


def _decode(folder: Any, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``folder`` as (N, C, H, W) uint8 and its class index (N,) int64."""
    files = ImageFiles([path for path, _ in folder.samples], channels, size)
    x = torch.empty((len(files), channels, *size), dtype=torch.uint8)
    for i in range(len(files)):
        x[i] = files[i]
    return x, torch.tensor(folder.targets, dtype=torch.int64)


def _check_files(params: dict[str, Any]) -> None:
    _folders(params["root"])


@DATASETS.register(NAME, check=check_common(NAME))
@checks_files(_check_files)
def image_folder(
    *,
    root: str,
    resize: Resize = None,
    channels: Channels = None,
    val_fraction: Fraction = 0.1,
    test_fraction: Fraction = 0.2,
    split_seed: Seed = 0,
    mean: list[Pixel] | None = None,
    std: list[Spread] | None = None,
    stream: Stream = "auto",
    max_memory_gb: MemoryGB = None,
    workers: Workers = 2,
) -> Dataset:
    """Your images in ImageFolder layout (root/train/<class>/*.png, optional val/, test/); stats on train.

    A missing val/ or test/ is carved from train (``val_fraction``, ``test_fraction``, stratified by class,
    ``split_seed``); ``resize: [H, W]`` (bilinear), ``channels: 1|3``; mean / std per channel on train
    unless given. ``stream: auto`` holds the images in memory unless they pass ``max_memory_gb`` (default: a
    quarter of the machine's memory) and streams them from the files otherwise, decoded by ``workers``
    DataLoader processes; ``stream: true`` / ``false`` forces either.
    """
    folders = _folders(root)
    n = sum(len(folder) for folder in folders.values())
    if channels is None or resize is None:  # read every image's header (nothing decoded)
        every = [h for folder in folders.values() for h in _headers(folder)]
        channels = channels or image_channels({mode for _, mode, _ in every})
        size = tuple(resize) if resize is not None else _size(every)
    else:
        size = tuple(resize)
    common = {"val_fraction": val_fraction, "test_fraction": test_fraction, "split_seed": split_seed,
              "mean": mean, "std": std}
    if streams(NAME, n * channels * size[0] * size[1], stream=stream, max_memory_gb=max_memory_gb):
        sources = {split: (ImageFiles([p for p, _ in folder.samples], channels, size),
                           torch.tensor(folder.targets, dtype=torch.int64)) for split, folder in folders.items()}
        return assemble_streamed(NAME, sources, input_shape=(channels, *size), workers=workers, **common)
    splits = {split: _decode(folder, channels, size) for split, folder in folders.items()}
    return assemble(NAME, splits, **common)
