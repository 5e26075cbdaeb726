"""The ``DATASETS`` registry, ``load_dataset`` and ``check_files``.

Besides registered names, a study may name any torchvision dataset class, ``torchvision:SVHN``: the
registry makes its entry on first use (``_torchvision.dataset_reference``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdtune.data._core import Dataset
from kdtune.data._torchvision import dataset_reference
from kdtune.errors import ConfigError, DataError
from kdtune.registry import Registry

DATASETS: Registry = Registry("dataset", references=dataset_reference, reference_forms=(
    ("torchvision:<Class>", ("any class in torchvision.datasets (e.g. torchvision:SVHN) with its keywords, read "
                             "from root, never downloaded")),
))


def load_dataset(name: str, params: Mapping[str, Any] | None = None) -> Dataset:
    """The registered dataset ``name`` built with validated ``params``."""
    return DATASETS.build(name, **dict(params or {}))


def check_files(name: str, params: Mapping[str, Any], *, source: str) -> None:
    """Check the files dataset ``name`` would read (they exist, their layout, value ranges) without loading it.

    ``load_study`` runs this once, in the driver: a missing folder or a malformed archive fails at load (exit
    code 2, one line) before anything starts or is written. Ray workers, which re-validate each trial's
    config and may not see the files, never run it. Loaders declare it with ``_core.checks_files``.
    """
    check = getattr(DATASETS.get(name), "files_check", None)
    if check is None:
        return
    try:
        check(DATASETS.validate(name, params))
    except (ConfigError, DataError) as err:
        raise DataError(f"{source}: dataset: {err}") from None
