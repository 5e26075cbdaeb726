"""Optuna's exact hypervolume, which has no public home (see ``kdtune.compat``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdtune.compat import check_version


def compute_hypervolume() -> Callable[[Any, Any], float]:
    """Optuna's exact hypervolume ``(loss_vals (n, m), reference (m,)) -> float`` (minimization)."""
    check_version("optuna")
    from optuna._hypervolume import compute_hypervolume as exact

    return exact
