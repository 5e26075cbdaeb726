"""Which trials count: the study's constraints (``search.constraints``) and the majority-class floor.

A student whose validation accuracy is not above the share of the validation split's most frequent label
has learnt nothing a constant guess does not know; it is infeasible whatever it costs, with or without
constraints. Infeasible trials are never on the front nor in the hypervolume, and the sampler is told
(``violation``) so that it steers away from them. numpy only, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kdtune.metrics import acc
from kdtune.records import TrialRecord
from kdtune.spec import Constraint

__all__ = ["Feasibility", "majority_rate"]


def majority_rate(labels: np.ndarray) -> float | None:
    """The share of the most frequent label in ``labels`` (N,) (None for no labels): the accuracy of always
    guessing it. Counted as accuracy is (hits / N), so an equal count gives the very same float."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        return None
    return int(np.bincount(labels.astype(np.int64)).max()) / labels.size


@dataclass(frozen=True)
class Feasibility:
    """The study's ``constraints`` and the validation split's ``majority_rate`` (None where unknown)."""

    constraints: tuple[Constraint, ...] = ()
    majority_rate: float | None = None

    @property
    def floor(self) -> Constraint | None:
        """``val/acc > majority_rate``: the majority-class floor."""
        return None if self.majority_rate is None else Constraint(acc("val"), ">", self.majority_rate)

    @property
    def all(self) -> tuple[Constraint, ...]:
        """Every bound a feasible trial meets: the study's constraints, then the floor."""
        return self.constraints + ((self.floor,) if self.floor is not None else ())

    def holds(self, record: TrialRecord) -> bool:
        """Whether ``record`` is COMPLETE and meets every bound."""
        return record.status == "COMPLETE" and all(c.holds(record.metrics.get(c.metric)) for c in self.all)

    def mask(self, records: Sequence[TrialRecord]) -> np.ndarray:
        """Bool (n,): ``holds`` for each record."""
        return np.array([self.holds(r) for r in records], dtype=bool)

    def violation(self, metrics: Mapping[str, float]) -> float:
        """One number in Optuna's convention (feasible iff <= 0): the largest relative violation
        (``Constraint.violation``) over every bound; 0 without any."""
        return max((c.violation(metrics.get(c.metric)) for c in self.all), default=0.0)
