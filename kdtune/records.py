"""Plain records passed between the study, tracking and report layers (no torch, no ray)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from kdtune.spec import Mode, Objective, Reference, ReferenceRow

__all__ = ["Mode", "Objective", "Reference", "ReferenceRow", "Status", "TrialRecord"]

Status = Literal["COMPLETE", "FAILED"]


@dataclass(frozen=True)
class TrialRecord:
    """What one finished trial produced.

    ``params`` maps each searched hyperparameter's YAML path (``loss.temperature``) to its value;
    ``metrics`` maps stable metric names (``val/acc``, ``test/robust_acc@0.1``, ``latency/ms_b1``)
    to floats; ``error`` is the one-line reason a FAILED trial failed.
    """

    trial_id: str
    status: Status
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    checkpoint: str | None = None  # the student's weights file
    provenance: dict[str, str] = field(default_factory=dict)  # what the student learned from

    def objective_values(self, objectives: list[Objective]) -> list[float] | None:
        """The objectives' values, or None if the trial failed or any value is missing/non-finite."""
        if self.status != "COMPLETE":
            return None
        values = [self.metrics.get(o.metric) for o in objectives]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values]  # type: ignore[arg-type]
