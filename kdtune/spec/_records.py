"""Plain values derived from a study's spec and read by the report: objectives, constraints and reference
results."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["max", "min"]
Op = Literal[">=", "<=", ">", "<"]
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_CONSTRAINT = re.compile(r"\s*(?P<metric>[^\s<>=]+)\s*(?P<op>>=|<=|>|<)\s*(?P<threshold>\S+)\s*")
CONSTRAINT_FORM = "write '<metric> <op> <number>' with op one of >=, <=, >, <, e.g. 'val/acc >= 0.9'"


@dataclass(frozen=True)
class Objective:
    """One objective of a study: a metric name (e.g. ``val/acc``) and its direction."""

    metric: str
    mode: Mode


@dataclass(frozen=True)
class Constraint:
    """A bound on a metric a trial reports (``val/acc >= 0.9``); a trial is feasible when all of them hold."""

    metric: str
    op: Op
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold!r}"  # repr: parses back to the same float

    @classmethod
    def parse(cls, text: Any) -> Constraint:
        """``"val/acc >= 0.9"`` as a Constraint; anything else raises ``ValueError`` with the expected form."""
        match = _CONSTRAINT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{text!r} is not a constraint; {CONSTRAINT_FORM}")
        try:
            threshold = float(match["threshold"])
        except ValueError:
            threshold = math.nan
        if not math.isfinite(threshold):
            raise ValueError(f"{text!r}: the threshold {match['threshold']!r} is not a finite number; "
                             f"{CONSTRAINT_FORM}")
        return cls(match["metric"], match["op"], threshold)  # type: ignore[arg-type]

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` meets the bound (a missing or non-finite value never does)."""
        return value is not None and math.isfinite(value) and _OPS[self.op](value, self.threshold)

    def violation(self, value: float | None) -> float:
        """Optuna's constraint convention: <= 0 exactly when ``holds(value)``, else how far ``value`` misses
        the bound relative to the threshold (``threshold - value`` over ``|threshold|`` for ``>=``); 1 for a
        missing or non-finite value. A strict bound counts its threshold itself as a miss."""
        if value is None or not math.isfinite(value):
            return 1.0
        bound = self.threshold
        if self.op in (">", "<"):  # the nearest float that meets the strict bound
            bound = math.nextafter(bound, math.inf if self.op == ">" else -math.inf)
        gap = bound - value if self.op in (">=", ">") else value - bound
        return gap / (abs(self.threshold) or 1.0)


@dataclass(frozen=True)
class ReferenceRow:
    """One result a source document reports: the trials it corresponds to and the source's numbers.

    ``match`` maps searched YAML paths to values (``{"method.name": "hinton"}``); ``teacher`` marks
    the source's teacher row instead. ``metrics`` uses kdtune's metric names (``test/acc``).
    """

    label: str
    metrics: dict[str, float]
    match: dict[str, Any] = field(default_factory=dict)
    teacher: bool = False


@dataclass(frozen=True)
class Reference:
    """A source's results to show next to kdtune's; ``source`` cites it and states dataset differences."""

    source: str
    rows: list[ReferenceRow]
