"""The base study of the tests: the smallest valid study, as a fresh dict on every call.

A test states only what it is about on top of it (``base_study(evaluation={...})``, or by editing the
dict it gets), then validates it or writes it out and loads it like a study file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

_BASE: dict[str, Any] = {
    "name": "mini",
    "teacher": {"model": {"name": "mlp"}},
    "student": {"model": {"name": "mlp", "hidden": [16]}},
    "search": {
        "space": {"method.temperature": {"type": "float", "low": 1.0, "high": 8.0}},
        "objectives": [{"metric": "val/acc", "mode": "max"}],
        "budget": 2,
    },
}


def base_study(**sections: Any) -> dict[str, Any]:
    """A deep copy of the base study with the given top-level ``sections`` set (or replaced)."""
    return copy.deepcopy({**_BASE, **sections})


def study_yaml(raw: dict[str, Any]) -> str:
    """``raw`` as the text of a study file, keys in their order."""
    return yaml.safe_dump(raw, sort_keys=False)


def write_study(path: Path, raw: dict[str, Any] | str) -> Path:
    """``raw`` (a study dict, or the text of a study file) written as a study file at ``path``."""
    path.write_text(raw if isinstance(raw, str) else study_yaml(raw), encoding="utf-8")
    return path
