"""The timing protocol and the shape of a result.

Protocol (docs/notes: the one that gave stable ratios on 2 shared cores): one torch thread, a
warm-up round that is not timed, then ``repeats`` rounds in which every variant runs once, in
alternating order (forward in even rounds, reversed in odd ones, so slow drift hits all alike);
each ratio is computed within a round and the reported value is the median over rounds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A variant runs its workload once and returns the seconds it wants counted (it may exclude setup).
Variant = Callable[[], float]
# In-process, single-threaded workloads are timed in CPU seconds of the whole process: on a machine
# shared with other users, wall time also counts the time spent waiting for a core.
cpu_clock = time.process_time

PROTOCOL = (
    "torch.set_num_threads(1); one untimed warm-up round; {repeats} interleaved rounds "
    "(every variant once per round, order reversed every other round); ratios within a round; "
    "median of the ratios; training steps and robust evaluation timed in CPU seconds of the process "
    "(single-threaded work on a shared machine), the harness and latency in wall time"
)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(variants: Mapping[str, Variant], *, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of every variant in each of ``repeats`` rounds, after ``warmup`` untimed rounds."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(variants[name]())
    return times


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-round ratios ``num[r] / den[r]``."""
    return [a / b for a, b in zip(num, den, strict=True)]


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(ratios(num, den))


def cv(values: list[float]) -> float:
    """Coefficient of variation (population std / mean); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    return statistics.pstdev(values) / statistics.fmean(values)


@dataclass
class Result:
    """One benchmark: ``value`` compared with ``target`` (``sense`` is "<=" or ">=")."""

    name: str
    value: float
    target: float
    sense: str = "<="
    per_batch: dict[str, float] = field(default_factory=dict)  # "b64" -> ratio
    extra: dict[str, Any] = field(default_factory=dict)  # reference ratios, raw seconds, checks
    meaning: str = ""
    conditions: dict[str, bool] = field(default_factory=dict)  # further pass conditions, e.g. a CV bound
    note: str = ""  # one short line for the table

    @property
    def ok(self) -> bool:
        if not math.isfinite(self.value):
            return False
        met = self.value <= self.target if self.sense == "<=" else self.value >= self.target
        return met and all(self.conditions.values())

    def to_json(self) -> dict[str, Any]:
        return {**{k: _round(v) for k, v in self.per_batch.items()}, "value": _round(self.value),
                "target": self.target, "sense": self.sense, "ok": self.ok, "meaning": self.meaning,
                "note": self.note, **{k: _round(v) for k, v in self.extra.items()}, **self.conditions}


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_round(x) for x in v]
    return v
