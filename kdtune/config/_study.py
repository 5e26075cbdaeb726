"""The whole study (``StudyConfig``), dotted-path overrides, and one-line validation errors."""

from __future__ import annotations

import re
from typing import Annotated, Any, Union

import pydantic
from pydantic import BaseModel, Field

from kdtune.config._search import SearchSpec
from kdtune.config._specs import (
    AdversarySpec,
    DatasetSpec,
    EvaluationSpec,
    MethodSpec,
    OutputSpec,
    PenaltySpec,
    RaySpec,
    ResourcesSpec,
    TeacherSpec,
    TrackingSpec,
    TrainSpec,
    _Strict,
    registry_of,
)
from kdtune.errors import ConfigError
from kdtune.records import Objective, Reference, ReferenceRow
from kdtune.registry import did_you_mean


class ReferenceRowSpec(_Strict):
    """A result the source reports: ``match`` picks kdtune's trial by searched values (or ``teacher: true``)."""

    label: str
    match: dict[str, Union[bool, int, float, str, None]] = Field(default_factory=dict)
    teacher: bool = False
    metrics: Annotated[dict[str, float], Field(min_length=1)]

    def record(self) -> ReferenceRow:
        return ReferenceRow(self.label, dict(self.metrics), dict(self.match), self.teacher)


class ReferenceSpec(_Strict):
    """The source document's own numbers, shown next to kdtune's; ``source`` cites it and states
    how its data differ (e.g. full MNIST there, the 5,000-image subset here)."""

    source: str
    rows: Annotated[list[ReferenceRowSpec], Field(min_length=1)]

    def record(self) -> Reference:
        return Reference(self.source, [r.record() for r in self.rows])


class ReportSpec(_Strict):
    reference: ReferenceSpec | None = None


class StudyConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
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
            try:
                params = registry_of("penalty").validate(name, spec)
            except ConfigError as err:
                raise ValueError(str(err)) from None
            out[name] = {"weight": weight, "params": params}
        return out

    @pydantic.model_validator(mode="after")
    def _objectives_exist(self) -> StudyConfig:
        from kdtune.evaluate import metric_names

        known = metric_names(self.evaluation, self.dataset.name)
        for i, obj in enumerate(self.search.objectives):
            if obj.metric not in known:
                raise ValueError(
                    f"search.objectives[{i}]: unknown metric '{obj.metric}'"
                    f"{did_you_mean(obj.metric, known)}; known: {', '.join(known)}"
                )
        from kdtune.robustness import autoattack_metric_names

        reported = known + autoattack_metric_names(self.evaluation)  # measured after the sweep: not objectives
        for i, row in enumerate(self.report.reference.rows if self.report.reference else []):
            where = f"report.reference.rows[{i}]"
            for metric in row.metrics:
                if metric not in reported:
                    raise ValueError(f"{where}.metrics: unknown metric '{metric}'{did_you_mean(metric, reported)}")
            for path in row.match:
                if path not in self.search.space:
                    raise ValueError(
                        f"{where}.match: '{path}' is not searched{did_you_mean(path, list(self.search.space))}; "
                        "match on search.space paths"
                    )
            if row.teacher == bool(row.match):
                raise ValueError(f"{where}: give either match: {{...}} or teacher: true")
        return self


    @property
    def objectives(self) -> list[Objective]:
        return [o.record() for o in self.search.objectives]

    def to_raw(self) -> dict[str, Any]:
        """The study in YAML layout with every default filled in (what search paths address)."""
        return self.model_dump(mode="json")

    def with_overrides(self, overrides: dict[str, Any]) -> StudyConfig:
        """A new config with each ``"a.b.0": value`` applied to the YAML layout, re-validated.

        A component's ``name`` (e.g. ``method.name``) is applied first; switching to another name keeps
        only the parameters the new component accepts, so each method starts from its own defaults.
        """
        raw = self.to_raw()
        names = {p: v for p, v in overrides.items() if p.endswith(".name")}
        for path, value in names.items():
            _switch_component(raw, path.removesuffix(".name"), value)
        for path, value in overrides.items():
            if path not in names:
                set_path(raw, path, value)
        return _validate(raw, source="overrides")


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


def _switch_component(raw: dict[str, Any], path: str, name: Any) -> None:
    node = get_path(raw, path)
    kind = _component_kind(path.split("."))
    if not isinstance(node, dict) or kind is None or node.get("name") == name:
        set_path(raw, f"{path}.name", name)
        return
    registry = registry_of(kind)
    accepted = set(registry.entry(name).schema.model_fields) if name in registry else set()
    set_path(raw, path, {"name": name, **{k: v for k, v in node.items() if k in accepted}})


def _component_kind(loc: list[str]) -> str | None:
    """The registry kind of the component at ``loc`` (e.g. ["student", "model"] -> "model")."""
    cls: Any = StudyConfig
    for key in loc:
        fields = getattr(cls, "model_fields", None)
        if not fields or key not in fields:
            return None
        cls = _model_of(fields[key].annotation)
    return getattr(cls, "registry", None) or None


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
        raise ConfigError(f"{path}: '{last}' is not inside a mapping or list; check the path")


def _index(node: list, key: str, path: str) -> int:
    if not re.fullmatch(r"\d+", key) or int(key) >= len(node):
        raise ConfigError(f"{path}: '{key}' is not an index of a list of length {len(node)}")
    return int(key)



def _validate(raw: dict[str, Any], *, source: str) -> StudyConfig:
    try:
        return StudyConfig.model_validate(raw)
    except pydantic.ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None



def format_validation_error(err: pydantic.ValidationError) -> str:
    """One line for the first error: the field path, what is wrong, and the fix where we can tell."""
    errors = err.errors()
    first = _most_helpful(errors)
    union = _scalar_union(first, errors)
    loc = [str(p) for p in first["loc"][: -1 if union else None] if p not in ("float", "int", "categorical")]
    field = ".".join(loc)
    msg = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if first["type"] == "extra_forbidden":
        known = _known_fields(loc[:-1])
        hint = did_you_mean(loc[-1], known) if known else ""
        return f"{field}: unknown field{hint or ''}" + ("" if hint else f"; known fields: {', '.join(known)}")
    if first["type"] == "missing":
        return f"{field}: required field is missing; add it to the study file"
    if first["type"] == "union_tag_not_found":
        return f"{field}: no 'type' given; add type: float, int or categorical"
    if union:
        msg = f"must be a single value ({union}), not a list or mapping"
    got = first.get("input")
    shown = "" if isinstance(got, dict) or first["type"].startswith("value_error") else f" (got {got!r})"
    return f"{field}: {msg}{shown}" if field else f"{msg}{shown}"


def _most_helpful(errors: list[Any]) -> Any:
    """The first error, except that a misspelled key beats the missing field it was meant to be."""
    first = errors[0]
    if first["type"] == "missing":
        for other in errors:
            if other["type"] == "extra_forbidden" and other["loc"][:-1] == first["loc"][:-1]:
                return other
    return first


def _scalar_union(first: Any, errors: list[Any]) -> str:
    """For a value matching no member of a scalar union (e.g. categorical choices), the members' names."""
    loc = first["loc"]
    members = [e["loc"][-1] for e in errors if e["loc"] and e["loc"][:-1] == loc[:-1]]
    if not loc or len(members) < 2 or not set(members) <= {"bool", "int", "float", "str", "none"}:
        return ""
    return ", ".join(members)


def _known_fields(loc: list[str]) -> list[str]:
    """Field names of the model at ``loc`` inside StudyConfig (for did-you-mean hints)."""
    cls: Any = StudyConfig
    for key in loc:
        fields = getattr(cls, "model_fields", None)
        if not fields or key not in fields:
            return []
        cls = _model_of(fields[key].annotation)
    return list(getattr(cls, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
