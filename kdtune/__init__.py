"""kdtune: hyperparameter studies over knowledge distillation.

The extension points are public: a plugin module (``plugins:`` in a study file, or the ``kdtune.plugins``
entry-point group) registers its own components with the decorators kdtune uses itself::

    from kdtune import MODELS

    @MODELS.register("my_cnn")
    def my_cnn(*, input_shape, n_classes, width: int = 32) -> torch.nn.Module: ...

Registries: ``DATASETS``, ``MODELS``, ``METHODS``, ``LOSSES``, ``PENALTIES``, ``ATTACKS``. Each is loaded on
first use (``import kdtune`` itself imports nothing heavy).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ATTACKS", "DATASETS", "LOSSES", "METHODS", "MODELS", "PENALTIES"]
_HOMES = {"ATTACKS": "kdtune.attacks", "DATASETS": "kdtune.data", "LOSSES": "kdtune.losses",
          "METHODS": "kdtune.methods", "MODELS": "kdtune.models", "PENALTIES": "kdtune.penalties"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'kdtune' has no attribute {name!r}")
