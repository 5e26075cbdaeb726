"""Plain values derived from a study's spec and read by the report: objectives and reference results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class Objective:
    """One objective of a study: a metric name (e.g. ``val/acc``) and its direction."""

    metric: str
    mode: Mode


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
