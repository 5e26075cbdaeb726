"""The whole study (``StudyConfig``) as structure, and dotted-path access to its YAML layout."""

from __future__ import annotations

import re
from typing import Annotated, Any, Union

import pydantic
from pydantic import Field

from kdtune.spec._base import DatasetSpec, MethodSpec, Strict
from kdtune.spec._parts import (
    AdversarySpec,
    EvaluationSpec,
    OutputSpec,
    PenaltySpec,
    RaySpec,
    ResourcesSpec,
    TeacherSpec,
    TrackingSpec,
    TrainSpec,
)
from kdtune.spec._records import Objective, Reference, ReferenceRow
from kdtune.spec._search import SearchSpec


class ReferenceRowSpec(Strict):
    """A result the source reports: ``match`` picks kdtune's trial by searched values (or ``teacher: true``)."""

    label: str
    match: dict[str, Union[bool, int, float, str, None]] = Field(default_factory=dict)
    teacher: bool = False
    metrics: Annotated[dict[str, float], Field(min_length=1)]

    def record(self) -> ReferenceRow:
        return ReferenceRow(self.label, dict(self.metrics), dict(self.match), self.teacher)


class ReferenceSpec(Strict):
    """The source document's own numbers, shown next to kdtune's; ``source`` cites it and states
    how its data differ (e.g. full MNIST there, the 5,000-image subset here)."""

    source: str
    rows: Annotated[list[ReferenceRowSpec], Field(min_length=1)]

    def record(self) -> Reference:
        return Reference(self.source, [r.record() for r in self.rows])


class ReportSpec(Strict):
    reference: ReferenceSpec | None = None


class StudyConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    # Modules of the user's own code that register components (kdtune.plugins), imported before validation
    plugins: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]] = Field(
        default_factory=list)
    seed: int = 0
    dataset: DatasetSpec = DatasetSpec(name="mnist_5k")
    teacher: TeacherSpec
    student: TrainSpec
    method: MethodSpec = MethodSpec(name="hinton")
    penalties: dict[str, PenaltySpec] = Field(default_factory=dict)
    adversary: AdversarySpec | None = None
    evaluation: EvaluationSpec = EvaluationSpec()
    search: SearchSpec
    resources: ResourcesSpec = ResourcesSpec()
    ray: RaySpec = RaySpec()
    tracking: TrackingSpec = TrackingSpec()
    output: OutputSpec = OutputSpec()
    report: ReportSpec = ReportSpec()

    @pydantic.field_validator("penalties", mode="before")
    @classmethod
    def _penalty_params(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = {}
        for name, spec in raw.items():
            if not isinstance(name, str):
                raise ValueError(f"penalty names must be strings, got {name!r}")
            if isinstance(spec, PenaltySpec):
                spec = {"weight": spec.weight, **spec.params}
            spec = dict(spec or {}) if isinstance(spec, dict) or spec is None else spec
            if not isinstance(spec, dict):
                raise ValueError(f"penalty '{name}' must be a mapping like {{weight: 0.1}}")
            weight = spec.pop("weight", 0.0)
            out[name] = {"weight": weight, "params": spec}  # checked against the registry by kdtune.config
        return out

    @property
    def objectives(self) -> list[Objective]:
        return [o.record() for o in self.search.objectives]

    def to_raw(self) -> dict[str, Any]:
        """The study in YAML layout with every default filled in (what search paths address)."""
        return self.model_dump(mode="json")


def get_path(raw: dict[str, Any], path: str) -> Any:
    """``raw[a][b][0]`` for ``path="a.b.0"``, or None where the path does not exist."""
    node: Any = raw
    for key in path.split("."):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return node


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set ``raw[a][b][0] = value`` for ``path="a.b.0"``, creating missing mappings on the way."""
    *parents, last = path.split(".")
    node: Any = raw
    for key in parents:
        if isinstance(node, list):
            node = node[_index(node, key, path)]
        else:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
    if isinstance(node, list):
        node[_index(node, last, path)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"{path}: '{last}' is not inside a mapping or list; check the path")


def _index(node: list, key: str, path: str) -> int:
    if not re.fullmatch(r"\d+", key) or int(key) >= len(node):
        raise ValueError(f"{path}: '{key}' is not an index of a list of length {len(node)}")
    return int(key)
