"""Any torchvision dataset class by reference: ``{name: "torchvision:SVHN", root: DIR}``.

The name resolves to ``torchvision.datasets.<Class>`` only (nothing else is imported), built with
``download=False`` always. Its parameters are kdtune's (``val_fraction``, ``resize``, ``channels``,
``mean``, ``std``, ``stream``, ...) plus the class's own constructor keywords (e.g. EMNIST's ``split``),
validated at load. The splits follow the class's convention:

- ``train=True/False`` (MNIST, CIFAR10, USPS, ...): train and test; val carved from train;
- ``split=`` (SVHN, STL10, GTSRB, Flowers102, ...): ``train_split`` (the class's default, usually
  ``"train"``), ``test_split`` (``"test"``) and ``val_split`` (none: carved), any of the class's values;
- neither (FakeData, EuroSAT, ...): one set, val and test carved from it.

Images become in-memory tensors (pixels in [0, 1]), or are streamed from the dataset batch by batch when
they pass the memory limit (``stream``); labels must be class indices.
"""

from __future__ import annotations

import inspect
import os
import typing
from typing import Any

import numpy as np
import pydantic
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
from kdtune.data._stream import assemble_streamed
from kdtune.errors import ConfigError, DataError
from kdtune.registry import Entry, did_you_mean

PREFIX = "torchvision:"
_EXAMPLES = ("CIFAR10", "CIFAR100", "EMNIST", "FashionMNIST", "KMNIST", "MNIST", "STL10", "SVHN", "USPS")
_FOLDERS = ("ImageFolder", "DatasetFolder", "VisionDataset")  # not datasets of their own: image_folder is
_KDTUNE_SETS = ("root", "train", "download", "transform", "target_transform", "transforms", "loader")
_SPLITS = ("train_split", "val_split", "test_split")
_COMMON: dict[str, Any] = {  # kdtune's parameters, as image_folder has them
    "resize": (Resize, None), "channels": (Channels, None), "val_fraction": (Fraction, 0.1),
    "split_seed": (Seed, 0), "mean": (list[Pixel] | None, None), "std": (list[Spread] | None, None),
    "stream": (Stream, "auto"), "max_memory_gb": (MemoryGB, None), "workers": (Workers, 2),
}
_OURS = frozenset({*_COMMON, "test_fraction", *_SPLITS})  # never passed to the class (none of them has these)


def dataset_reference(name: str) -> Entry:
    """The ``DATASETS`` entry for ``torchvision:<Class>``; anything else raises ``ConfigError``."""
    if not name.startswith(PREFIX):
        raise ConfigError(f"dataset '{name}': a dataset reference must be torchvision:<Class> (e.g. "
                          "torchvision:SVHN); register your own loader in a plugin with @DATASETS.register")
    cls = _dataset_class(name, name.removeprefix(PREFIX))
    keywords = _keywords(cls)
    convention = "train" if "train" in keywords else "split" if "split" in keywords else None

    @checks_files(lambda params: _check_root(name, cls, convention, params))
    def load(**params: Any) -> Dataset:
        return _load(name, cls, convention, params)

    description = f"torchvision.datasets.{cls.__name__}, read from root, never downloaded"
    return Entry(name, load, description, _schema(name, cls, convention), check_common(name))


def _dataset_class(name: str, class_name: str) -> type:
    import torchvision.datasets

    public = list(torchvision.datasets.__all__)
    cls = getattr(torchvision.datasets, class_name, None) if class_name in public else None
    if class_name in _FOLDERS:
        raise ConfigError(f"dataset '{name}': for a folder of images per class use {{name: image_folder, root: DIR}}")
    if not (inspect.isclass(cls) and issubclass(cls, torch.utils.data.Dataset)):
        examples = ", ".join(c for c in _EXAMPLES if c in public)
        raise ConfigError(f"dataset '{name}': torchvision.datasets has no dataset class '{class_name}'"
                          f"{did_you_mean(class_name, public)}; e.g. {examples} (any class in torchvision.datasets)")
    return cls


def _keywords(cls: type) -> set[str]:
    """The keywords ``cls`` accepts, also those its ``**kwargs`` hands to a base class (EMNIST's ``train``)."""
    found: set[str] = set()
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters.values()
        found |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return found


def _schema(name: str, cls: type, convention: str | None) -> type[pydantic.BaseModel]:
    """kdtune's parameters, the split names (``split=`` classes), then the class's own keyword parameters."""
    fields = dict(_COMMON)
    if convention != "train":
        fields["test_fraction"] = (Fraction, 0.2)
    if convention == "split":
        own = inspect.signature(cls).parameters
        default = own["split"].default if "split" in own else "train"
        fields["train_split"] = (str, default if isinstance(default, str) else "train")
        fields["val_split"] = (str | None, None)
        fields["test_split"] = (str | None, "test")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: leave those parameters to the class
        hints = {}
    for p in inspect.signature(cls).parameters.values():
        skip = p.name in _KDTUNE_SETS or p.name in _OURS or p.name.startswith("_")
        skip = skip or (convention == "split" and p.name == "split")
        if skip or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        fields[p.name] = (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
    if "root" in inspect.signature(cls).parameters:
        fields["root"] = (str, ...)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    try:
        return pydantic.create_model(f"{name}_params", __config__=config, **fields)
    except (TypeError, pydantic.PydanticSchemaGenerationError):  # an annotation pydantic cannot check
        loose = {k: (Any, v[1]) if k not in _OURS else v for k, v in fields.items()}
        return pydantic.create_model(f"{name}_params", __config__=config, **loose)


def _download_hint(cls: type, convention: str | None, params: dict[str, Any]) -> str:
    root = params.get("root", "DIR")
    if "download" not in _keywords(cls):
        return f"put its files under root as torchvision.datasets.{cls.__name__}'s documentation says"
    if convention == "train":
        splits = ["train=True", "train=False"]
    elif convention == "split":
        splits = [f"split={params[k]!r}" for k in _SPLITS if params.get(k)]
    else:
        splits = [""]
    calls = " and ".join(f"torchvision.datasets.{cls.__name__}({root!r}{', ' + s if s else ''}, download=True)"
                         for s in splits)
    return f"download it once on a machine with internet ({calls}) and point root at that folder"


def _check_root(name: str, cls: type, convention: str | None, params: dict[str, Any]) -> None:
    """A root that is not a folder fails here; the class itself checks its files when it loads."""
    if "root" in params and not os.path.isdir(os.path.expanduser(params["root"])):
        raise DataError(f"dataset '{name}': root {params['root']} is not a folder and kdtune never downloads; "
                        f"{_download_hint(cls, convention, params)}")


def _construct(
    name: str, cls: type, convention: str | None, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The class built once per split it provides, {"train": ds, "val"?: ds, "test"?: ds}, and the keywords
    each was built with."""
    kwargs = {k: v for k, v in params.items() if k not in _OURS}
    if "root" in kwargs:
        kwargs["root"] = os.path.expanduser(kwargs["root"])
    if "download" in _keywords(cls):
        kwargs["download"] = False
    if convention == "train":
        wanted = {"train": {"train": True}, "test": {"train": False}}
    elif convention == "split":
        wanted = {s: {"split": params[f"{s}_split"]} for s in ("train", "val", "test") if params[f"{s}_split"]}
    else:
        wanted = {"train": {}}
    try:
        return ({split: cls(**kwargs, **extra) for split, extra in wanted.items()},
                {split: {**kwargs, **extra} for split, extra in wanted.items()})
    except (ValueError, TypeError) as err:
        raise DataError(f"dataset '{name}': torchvision.datasets.{cls.__name__} refused its parameters "
                        f"({_reason(err)}); fix them in the study file") from err
    except (RuntimeError, OSError) as err:
        raise DataError(f"dataset '{name}': torchvision.datasets.{cls.__name__} cannot read it under "
                        f"{kwargs.get('root')} ({_reason(err)}); {_download_hint(cls, convention, params)}") from err


def _item(name: str, ds: Any, i: int) -> tuple[Any, int]:
    """Example ``i`` as (PIL image, class index); DataError for anything else."""
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image

    img, target = ds[i]
    if isinstance(target, torch.Tensor) and target.ndim == 0 and not target.is_floating_point():
        target = target.item()
    if isinstance(target, np.integer):
        target = int(target)
    if not isinstance(target, int):
        raise DataError(f"dataset '{name}': its targets are {type(target).__name__}s, not class indices; only "
                        "image classification datasets load here (register your own loader in a plugin)")
    if not isinstance(img, Image.Image):
        try:
            img = to_pil_image(img)
        except (TypeError, ValueError) as err:
            raise DataError(f"dataset '{name}': its images are {type(img).__name__}s that are not images "
                            f"({_reason(err)}); only image classification datasets load here") from err
    return img, int(target)


class TorchvisionItems:
    """A streamed split's ``Source``: items ``indices`` of the class built with ``kwargs`` (rebuilt lazily in
    each process that reads it), as (C, H, W) uint8."""

    def __init__(self, name: str, cls: type, kwargs: dict[str, Any], indices: list[int], channels: int,
                 size: tuple[int, int], resize: bool) -> None:
        self.name, self.cls, self.kwargs, self.indices = name, cls, kwargs, indices
        self.channels, self.size, self.resize = channels, tuple(size), resize
        self._ds: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}  # workers build their own

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._ds is None:
            self._ds = self.cls(**self.kwargs)
        return _pixels_of(self.name, self._ds, self.indices[i], self.channels, self.size, self.resize)[0]

    def subset(self, indices: list[int]) -> TorchvisionItems:
        return TorchvisionItems(self.name, self.cls, self.kwargs, [self.indices[i] for i in indices],
                                self.channels, self.size, self.resize)

    def update_hash(self, h: Any) -> None:
        h.update(f"|{self.cls.__module__}.{self.cls.__name__}|{sorted(self.kwargs.items())}|{self.channels}"
                 f"{self.size}|".encode())
        h.update(torch.tensor(self.indices, dtype=torch.int64).numpy())


def _pixels_of(name: str, ds: Any, i: int, channels: int, size: tuple[int, int],
               resize: bool) -> tuple[torch.Tensor, int]:
    """Example ``i`` of ``ds`` as (C, H, W) uint8 and its class index."""
    img, target = _item(name, ds, i)
    if not resize and (img.height, img.width) != tuple(size):
        raise DataError(f"dataset '{name}': image {i} is {img.height}x{img.width}, the first one "
                        f"{size[0]}x{size[1]}; give resize: [H, W] to bring them all to one size")
    return pil_pixels(img, channels, size), target


def _tensors(name: str, ds: Any, channels: int, size: tuple[int, int], resize: bool) -> tuple[torch.Tensor, ...]:
    """Every example of ``ds`` as (N, C, H, W) uint8 and (N,) int64."""
    x = torch.empty((len(ds), channels, *size), dtype=torch.uint8)
    y = torch.empty(len(ds), dtype=torch.int64)
    for i in range(len(ds)):
        x[i], y[i] = _pixels_of(name, ds, i, channels, size, resize)
    return x, y


def _targets(name: str, ds: Any) -> torch.Tensor:
    """The class index of every example (N,) int64: the class's ``targets`` / ``labels`` where it keeps
    them, else read item by item (each image decoded once)."""
    for attr in ("targets", "labels", "_labels", "y"):
        given = getattr(ds, attr, None)
        if given is not None and len(given) == len(ds):
            try:
                return torch.as_tensor(np.asarray(given), dtype=torch.int64).reshape(len(ds))
            except (TypeError, ValueError, RuntimeError):
                break
    return torch.tensor([_item(name, ds, i)[1] for i in range(len(ds))], dtype=torch.int64)


def _load(name: str, cls: type, convention: str | None, params: dict[str, Any]) -> Dataset:
    _check_root(name, cls, convention, params)
    parts, kwargs = _construct(name, cls, convention, params)
    if len(parts["train"]) == 0:
        raise DataError(f"dataset '{name}': the train split is empty; check root and the split's name")
    first, _ = _item(name, parts["train"], 0)
    channels = params["channels"] or image_channels({first.mode})
    size = tuple(params["resize"] or (first.height, first.width))
    resize = params["resize"] is not None
    common = {"val_fraction": params["val_fraction"], "test_fraction": params.get("test_fraction", 0.2),
              "split_seed": params["split_seed"], "mean": params["mean"], "std": params["std"]}
    n_values = sum(len(ds) for ds in parts.values()) * channels * size[0] * size[1]
    if streams(name, n_values, stream=params["stream"], max_memory_gb=params["max_memory_gb"]):
        sources = {s: (TorchvisionItems(name, cls, kwargs[s], list(range(len(ds))), channels, size, resize),
                       _targets(name, ds)) for s, ds in parts.items()}
        return assemble_streamed(name, sources, input_shape=(channels, *size), workers=params["workers"], **common)
    splits = {s: _tensors(name, ds, channels, size, resize) for s, ds in parts.items()}
    return assemble(name, splits, **common)
