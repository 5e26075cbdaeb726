"""Typed, frozen study config and ``load_study(path)``: the only YAML reader.

A study file is data (``yaml.safe_load``). Every ``{name: ..., **params}`` component is checked
against its registered function's signature at load time, and every search-space entry is checked by
applying its extreme values to the study and validating the result, so a typo, a wrong type or an
impossible range fails before anything trains, with one line naming the field and the fix.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from kdtune.errors import ConfigError
from kdtune.records import Objective
from kdtune.registry import Registry, did_you_mean

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(BaseModel):
    """``{name: ..., **params}`` in YAML; ``params`` are validated against the registry entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: ClassVar[str] = ""
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @pydantic.model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    @pydantic.model_validator(mode="before")
    @classmethod
    def _split_params(cls, raw: Any) -> Any:
        if isinstance(raw, Component):
            return {"name": raw.name, "params": raw.params}
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValueError(f"expected a mapping with a 'name' key, e.g. {{name: ..., ...}}; got {raw!r}")
        raw = dict(raw)
        name = raw.pop("name")
        if not isinstance(name, str):
            raise ValueError(f"'name' must be a string, got {name!r}")
        try:
            params = registry_of(cls.registry).validate(name, raw)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return {"name": name, "params": params}


def registry_of(kind: str) -> Registry:
    """The registry of one extension point (imported lazily: the modules pull in torch)."""
    from kdtune import attacks, data, losses, models, penalties

    return {
        "dataset": data.DATASETS,
        "model": models.MODELS,
        "loss": losses.LOSSES,
        "penalty": penalties.PENALTIES,
        "attack": attacks.ATTACKS,
    }[kind]


class DatasetSpec(Component):
    registry: ClassVar[str] = "dataset"


class ModelSpec(Component):
    registry: ClassVar[str] = "model"


class LossSpec(Component):
    registry: ClassVar[str] = "loss"


class AttackSpec(Component):
    registry: ClassVar[str] = "attack"


class PenaltySpec(BaseModel):
    """``{weight: w, **params}`` for the penalty named by its key under ``penalties``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: NonNegFloat = 0.0
    params: dict[str, Any] = Field(default_factory=dict)

    @pydantic.model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"weight": self.weight, **self.params}


class TrainSpec(_Strict):
    model: ModelSpec
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1.0e-3
    weight_decay: NonNegFloat = 0.0
    optimizer: Literal["adam", "sgd"] = "adam"


class AdversarySpec(_Strict):
    """Adversarial training: each batch is replaced by ``attack(student, x, y)`` when enabled."""

    enabled: bool = True
    attack: AttackSpec


class LatencySpec(_Strict):
    """Latency protocol: one thread, inference mode, warm-up, interleaved repeats, median per call."""

    batch_sizes: list[PositiveInt] = [1, 256]
    warmup: Annotated[int, Field(ge=1)] = 50
    repeats: PositiveInt = 5
    n_calls: PositiveInt = 20


class EvaluationSpec(_Strict):
    eps: list[NonNegFloat] = [0.05, 0.1, 0.2]
    pgd_steps: PositiveInt = 20
    fgsm: bool = True
    n_jacobian: PositiveInt = 256
    latency: LatencySpec = LatencySpec()


class FloatDist(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @pydantic.model_validator(mode="after")
    def _range(self) -> FloatDist:
        _check_range(self.low, self.high, self.log)
        return self


class IntDist(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @pydantic.model_validator(mode="after")
    def _range(self) -> IntDist:
        _check_range(self.low, self.high, self.log)
        return self


class CategoricalDist(_Strict):
    type: Literal["categorical"]
    choices: Annotated[list[Union[bool, int, float, str, None]], Field(min_length=1)]


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be smaller than high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {low}); raise low or set log: false")


Distribution = Annotated[Union[FloatDist, IntDist, CategoricalDist], Field(discriminator="type")]


class SamplerSpec(_Strict):
    name: Literal["tpe", "nsga2", "random", "grid"] = "tpe"
    n_startup_trials: PositiveInt | None = None  # tpe: default min(10, max(2, budget // 3))
    population_size: PositiveInt | None = None  # nsga2


class ObjectiveSpec(_Strict):
    metric: str
    mode: Literal["max", "min"]

    def record(self) -> Objective:
        return Objective(self.metric, self.mode)


class SearchSpec(_Strict):
    space: dict[str, Distribution]
    objectives: Annotated[list[ObjectiveSpec], Field(min_length=1)]
    sampler: SamplerSpec = SamplerSpec()
    budget: PositiveInt | None = None  # number of trials; a grid defaults to its size
    max_concurrent: PositiveInt = 2

    @pydantic.model_validator(mode="after")
    def _check(self) -> SearchSpec:
        if not self.space:
            raise ValueError("search.space is empty; name at least one hyperparameter to search")
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives repeat a metric: {metrics}")
        if self.sampler.name == "grid":
            bad = [p for p, d in self.space.items() if not isinstance(d, CategoricalDist)]
            if bad:
                raise ValueError(f"the grid sampler needs categorical entries only; make {bad[0]} categorical")
        elif self.budget is None:
            raise ValueError("search.budget is required (number of trials) unless sampler is grid")
        return self

    @property
    def n_trials(self) -> int:
        if self.budget is not None:
            return self.budget
        n = 1
        for dist in self.space.values():
            n *= len(dist.choices)  # type: ignore[union-attr]
        return n


class ResourcesSpec(_Strict):
    cpu: PositiveFloat = 1.0
    gpu: NonNegFloat = 0.0


class TrackingSpec(_Strict):
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str | None = None  # default: the study name


class OutputSpec(_Strict):
    reports: str = "reports"
    ray: str = ".kdtune/ray"
    cache: str | None = None  # default: $KDTUNE_CACHE_DIR, else ~/.cache/kdtune


class StudyConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    seed: int = 0
    dataset: DatasetSpec = DatasetSpec(name="mnist_5k")
    teacher: TrainSpec
    student: TrainSpec
    loss: LossSpec = LossSpec(name="hinton_kd")
    penalties: dict[str, PenaltySpec] = Field(default_factory=dict)
    adversary: AdversarySpec | None = None
    evaluation: EvaluationSpec = EvaluationSpec()
    search: SearchSpec
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    output: OutputSpec = OutputSpec()

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
        return self


    @property
    def objectives(self) -> list[Objective]:
        return [o.record() for o in self.search.objectives]

    def to_raw(self) -> dict[str, Any]:
        """The study in YAML layout with every default filled in (what search paths address)."""
        return self.model_dump(mode="json")

    def with_overrides(self, overrides: dict[str, Any]) -> StudyConfig:
        """A new config with each ``"a.b.0": value`` applied to the YAML layout, re-validated."""
        raw = self.to_raw()
        for path, value in overrides.items():
            set_path(raw, path, value)
        return _validate(raw, source="overrides")


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


def load_study(path: str | Path) -> StudyConfig:
    """Read, validate and return the study at ``path``; any problem raises ``ConfigError``."""
    path = Path(path)
    raw = _read_yaml(path)
    cfg = _validate(raw, source=str(path))
    _check_search_space(cfg, source=str(path))
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file; check the path (studies live in studies/*.yaml)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; pass a study file such as studies/smoke.yaml") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):  # e.g. !!python/object, never constructed
            tag_error = f"unsupported YAML tag{where}: {problem}; study files are plain data"
            raise ConfigError(f"{path}: {tag_error}") from None
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}; fix the YAML there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file must be a YAML mapping (name:, teacher:, ...), got {type(raw).__name__}")
    return raw


def _validate(raw: dict[str, Any], *, source: str) -> StudyConfig:
    try:
        return StudyConfig.model_validate(raw)
    except pydantic.ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None


def _check_search_space(cfg: StudyConfig, *, source: str) -> None:
    """Apply each search entry's extreme values to the study and validate: catches bad paths and ranges."""
    for path, dist in cfg.search.space.items():
        candidates = dist.choices if isinstance(dist, CategoricalDist) else [dist.low, dist.high]
        for value in candidates:
            try:
                cfg.with_overrides({path: value})
            except ConfigError as err:
                detail = str(err).removeprefix("overrides: ")
                raise ConfigError(
                    f"{source}: search.space.{path}: value {value!r} does not fit the study ({detail})"
                ) from None


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
