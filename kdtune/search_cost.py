"""What a search spent and what it bought: the hypervolume against cumulative trial-epochs and against
wall-clock seconds of sweeping (the report's cost figure, the ``search_cost`` benchmark).

Trials are taken in the order they finished. A trial's cost in epochs is what it trained: all its epochs
when complete, its rung's epoch when the scheduler stopped it, nothing recorded for a failed trial (0).
Wall-clock seconds count from the start of the study's first sweep, with the gaps between sweeps left
out: a study that accumulates sweeps over days is charged for the time its sweeps ran, Ray's start-up
included.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kdtune.records import TrialRecord

# One driver's run of a sweep: unix seconds at its start and its end (None: the driver was killed).
Span = tuple[float, float | None]


def sweep_seconds(finished: Sequence[float | None], spans: Sequence[Span]) -> list[float | None]:
    """For each unix finish time t, the seconds of sweeping up to t: sum over spans of |[start, min(end, t)]|.

    A span without an end (a killed driver) ends at the last finish inside it (before the next span's start),
    or at its start when none finished there. A time before the first span, or None, gives None.
    """
    spans = sorted(spans)
    starts = [s for s, _ in spans]
    known = sorted(t for t in finished if t is not None)
    closed = []
    for i, (start, end) in enumerate(spans):
        if end is None:
            upper = starts[i + 1] if i + 1 < len(spans) else float("inf")
            inside = known[bisect.bisect_left(known, start):bisect.bisect_left(known, upper)]
            end = inside[-1] if inside else start
        closed.append((start, max(start, end)))
    out: list[float | None] = []
    for t in finished:
        if t is None or not closed or t < closed[0][0]:
            out.append(None)
            continue
        out.append(sum(min(end, t) - start for start, end in closed if start <= t))
    return out


@dataclass(frozen=True)
class CostCurve:
    """The hypervolume after each finished trial, against what the search had spent by then."""

    order: np.ndarray  # (n,) int: positions in the record list, in the order the trials finished
    epochs: np.ndarray  # (n,) cumulative trial-epochs once trial order[k] had finished
    seconds: np.ndarray | None  # (n,) seconds of sweeping then; None unless every trial has ``sweep_s``
    hypervolume: np.ndarray  # (n,) of the trials finished so far

    def at_epochs(self, budget: float) -> float:
        """The hypervolume once ``budget`` trial-epochs were spent: of the trials finished within it."""
        k = int(np.searchsorted(self.epochs, budget, side="right"))
        return float(self.hypervolume[k - 1]) if k else 0.0

    def epochs_to_reach(self, target: float) -> float | None:
        """The cumulative trial-epochs at which the hypervolume first reached ``target``; None if never."""
        reached = np.flatnonzero(self.hypervolume >= target)
        return float(self.epochs[reached[0]]) if len(reached) else None


def cost_curve(records: Sequence[TrialRecord], hypervolume_of: Callable[[Sequence[int]], float]) -> CostCurve:
    """The curve of ``records``; ``hypervolume_of(positions)`` is the hypervolume of those records (it decides
    which are eligible: complete, feasible). Finishing order is by ``sweep_s``; without it, record order."""
    timed = all(r.sweep_s is not None for r in records)
    order = sorted(range(len(records)), key=lambda i: (records[i].sweep_s if timed else 0.0, i))
    spent = np.cumsum([float(records[i].epochs or 0) for i in order])
    seconds = np.array([float(records[i].sweep_s) for i in order]) if timed and records else None  # type: ignore[arg-type]
    hv = np.array([hypervolume_of(order[: k + 1]) for k in range(len(order))])
    return CostCurve(np.array(order, dtype=int), spent, seconds, hv)


__all__ = ["CostCurve", "Span", "cost_curve", "sweep_seconds"]
