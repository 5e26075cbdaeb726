"""Plain records passed between the study, tracking and report layers (no torch, no ray)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from kdtune.intervals import Interval, paired_difference, t_interval
from kdtune.spec import Mode, Objective, Reference, ReferenceRow

__all__ = ["Ablation", "Mode", "Objective", "Provenance", "Reference", "ReferenceRow", "Status", "TrialRecord"]

Status = Literal["COMPLETE", "FAILED", "PRUNED"]  # PRUNED: stopped early at a rung (search.scheduler)


@dataclass(frozen=True)
class Provenance:
    """What a student learned from: its KD method, the examples it trained on, and what of the real
    training data it saw. Stored and logged flat, as ``{field: text}`` (``as_dict`` / ``from_dict``)."""

    method: str
    transfer_set: str  # "training split", or "synthetic" for a data-free transfer set
    from_real_data: str  # e.g. "training images", "nothing"
    n: int | None = None  # examples in a synthetic transfer set
    objective: str | None = None  # the data-free reconstruction objective
    metadata: str | None = None  # where the teacher statistics a data-free method used are kept

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Provenance:
        """The record from its flat form; a missing required field reads as "unknown", an unknown key raises."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(raw) - known)
        if extra:
            raise ValueError(f"unknown provenance field(s) {extra}; known: {sorted(known)}")
        n = raw.get("n")
        return cls(
            method=str(raw.get("method", "unknown")), transfer_set=str(raw.get("transfer_set", "unknown")),
            from_real_data=str(raw.get("from_real_data", "unknown")), n=int(n) if n is not None else None,
            objective=raw.get("objective"), metadata=raw.get("metadata"),
        )


@dataclass(frozen=True)
class TrialRecord:
    """What one finished trial produced.

    ``params`` maps each searched hyperparameter's YAML path (``loss.temperature``) to its value;
    ``metrics`` maps stable metric names (``val/acc``, ``test/robust_acc@0.1``, ``latency/ms_b1``)
    to floats; ``error`` is the one-line reason a FAILED trial failed. A PRUNED trial was stopped early by
    the scheduler: it has no metrics (never on the front), ``epochs`` is the rung epoch it stopped at, and
    ``rungs`` holds, for every trial that reached a rung, the objectives measured cheaply there
    (``{epoch: {objective: value}}``; ``kdtune.rungs``), which are never final metrics.
    """

    trial_id: str
    status: Status
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    checkpoint: str | None = None  # the student's weights file
    provenance: Provenance | None = None  # what the student learned from
    epochs: int | None = None  # epochs trained: all of them when complete, the rung a PRUNED trial stopped at
    rungs: dict[int, dict[str, float]] = field(default_factory=dict)
    # When it finished, in wall-clock seconds of sweeping: counted from the start of the study's first sweep,
    # the gaps between sweeps left out (``kdtune.search_cost.sweep_seconds``); None where not recorded.
    sweep_s: float | None = None

    def objective_values(self, objectives: list[Objective]) -> list[float] | None:
        """The objectives' values, or None if the trial failed or any value is missing/non-finite."""
        if self.status != "COMPLETE":
            return None
        values = [self.metrics.get(o.metric) for o in objectives]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values]  # type: ignore[arg-type]


@dataclass(frozen=True)
class Ablation:
    """A trial against itself without distillation, seed by seed: ``distilled[i]`` and ``plain[i]`` are the
    metrics of the trial's configuration and of the same configuration with the ``ce`` method, both trained
    with ``seeds[i]``."""

    trial_id: str
    seeds: list[int]
    distilled: list[dict[str, float]]
    plain: list[dict[str, float]]

    def difference(self, metric: str) -> Interval | None:
        """distilled - plain in ``metric``: the 95% t-interval of the per-seed differences (None where a
        seed lacks the metric)."""
        pairs = [(d.get(metric), p.get(metric)) for d, p in zip(self.distilled, self.plain)]
        if not pairs or any(a is None or b is None for a, b in pairs):
            return None
        return paired_difference([a for a, _ in pairs], [b for _, b in pairs])

    def arm(self, metric: str, *, plain: bool) -> Interval | None:
        """One arm's mean ± 95% interval over the seeds in ``metric``."""
        values = [m.get(metric) for m in (self.plain if plain else self.distilled)]
        return None if not values or None in values else t_interval(values)
