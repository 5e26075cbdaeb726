"""The search section: distributions, sampler, objectives, constraints and budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import BeforeValidator, Field, PlainSerializer

from kdtune.spec._base import PositiveInt, Strict
from kdtune.spec._records import Constraint, Objective

Scalar = Union[bool, int, float, str, None]


class _Dist(Strict):
    """A search entry; ``when: {path: [values]}`` makes it conditional: it is sampled only for trials
    whose value at ``path`` (an earlier categorical entry, or the study's fixed setting) is listed."""

    when: dict[str, Annotated[list[Scalar], Field(min_length=1)]] | None = None

    def active(self, value_at: Callable[[str], Any]) -> bool:
        return not self.when or all(value_at(path) in allowed for path, allowed in self.when.items())


class FloatDist(_Dist):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @pydantic.model_validator(mode="after")
    def _range(self) -> FloatDist:
        _check_range(self.low, self.high, self.log)
        return self


class IntDist(_Dist):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @pydantic.model_validator(mode="after")
    def _range(self) -> IntDist:
        _check_range(self.low, self.high, self.log)
        return self


class CategoricalDist(_Dist):
    type: Literal["categorical"]
    choices: Annotated[list[Scalar], Field(min_length=1)]


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be smaller than high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {low}); raise low or set log: false")


Distribution = Annotated[Union[FloatDist, IntDist, CategoricalDist], Field(discriminator="type")]


class SamplerSpec(Strict):
    """``auto`` (the default): Gaussian-process Bayesian optimization (``gp``: Optuna's GPSampler, log-EHVI
    with several objectives), or multivariate TPE (``tpe``) when the space has conditional (``when``)
    entries, which a GP models poorly. ``n_startup_trials`` random trials come first (gp: 10; tpe:
    min(10, max(2, budget // 3)))."""

    name: Literal["auto", "gp", "tpe", "nsga2", "random", "grid"] = "auto"
    n_startup_trials: PositiveInt | None = None
    population_size: PositiveInt | None = None  # nsga2


class FifoSchedulerSpec(Strict):
    """Every trial trains all its epochs (the default)."""

    name: Literal["fifo"] = "fifo"


class MoashaSchedulerSpec(Strict):
    """Multi-objective asynchronous successive halving (MO-ASHA; Schmucker et al. 2021, arXiv:2106.12639).

    Rungs at epochs min_epochs * reduction_factor^k (k = 0, 1, ...) below ``student.epochs``; at each, a
    trial continues only if it ranks in the top ceil(n / reduction_factor) of the n trials that reached that
    rung (``kdtune.mo_rank``), else it stops there as PRUNED. Its objectives are measured cheaply at a rung:
    PGD with ``rung_pgd_steps`` steps on the first ``rung_subset`` validation images (``kdtune.rungs``).
    """

    name: Literal["moasha"]
    min_epochs: PositiveInt = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 3
    rung_pgd_steps: PositiveInt = 5
    rung_subset: PositiveInt = 256

    def rungs(self, epochs: int) -> list[int]:
        """The rung epochs of a trial that trains ``epochs`` epochs: min_epochs * eta^k < epochs."""
        out, rung = [], self.min_epochs
        while rung < epochs:
            out.append(rung)
            rung *= self.reduction_factor
        return out


SchedulerSpec = Annotated[Union[FifoSchedulerSpec, MoashaSchedulerSpec], Field(discriminator="name")]


class ObjectiveSpec(Strict):
    metric: str
    mode: Literal["max", "min"]

    def record(self) -> Objective:
        return Objective(self.metric, self.mode)


def _constraint(raw: Any) -> Constraint:
    return raw if isinstance(raw, Constraint) else Constraint.parse(raw)


# ``"val/acc >= 0.9"`` in YAML, a typed Constraint once loaded (and the string again in ``to_raw``)
ConstraintSpec = Annotated[Constraint, BeforeValidator(_constraint), PlainSerializer(str, return_type=str)]


class SearchSpec(Strict):
    space: dict[str, Distribution]
    objectives: Annotated[list[ObjectiveSpec], Field(min_length=1)]
    constraints: list[ConstraintSpec] = Field(default_factory=list)  # checked against the metrics by kdtune.config
    sampler: SamplerSpec = SamplerSpec()
    scheduler: SchedulerSpec = FifoSchedulerSpec()
    budget: PositiveInt | None = None  # number of trials; a grid defaults to its size
    max_concurrent: PositiveInt = 2
    # Trials to run first, each fixing some searched values (the sampler draws the rest), e.g. one per method of
    # a categorical so that each is tried at least once; enqueued once per study (Optuna's enqueue_trial).
    enqueue: list[dict[str, Scalar]] = Field(default_factory=list)

    @pydantic.model_validator(mode="after")
    def _check(self) -> SearchSpec:
        if not self.space:
            raise ValueError("search.space is empty; name at least one hyperparameter to search")
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives repeat a metric: {metrics}")
        _check_conditions(self.space)
        if self.sampler.name == "grid":
            conditional = [p for p, d in self.space.items() if d.when]
            if conditional:
                raise ValueError(f"the grid sampler cannot use conditional entries; remove 'when' from {conditional[0]}")
            bad = [p for p, d in self.space.items() if not isinstance(d, CategoricalDist)]
            if bad:
                raise ValueError(f"the grid sampler needs categorical entries only; make {bad[0]} categorical")
        elif self.budget is None:
            raise ValueError("search.budget is required (number of trials) unless sampler is grid")
        if self.enqueue and self.sampler.name == "grid":
            raise ValueError("search.enqueue: the grid sampler runs every combination anyway; remove enqueue")
        for i, point in enumerate(self.enqueue):
            _check_point(self.space, point, f"search.enqueue[{i}]")
        return self

    @property
    def sampler_kind(self) -> str:
        """The sampler that runs: ``auto`` resolved to ``gp``, or ``tpe`` for a space with ``when`` entries."""
        if self.sampler.name != "auto":
            return self.sampler.name
        return "tpe" if any(d.when for d in self.space.values()) else "gp"

    @property
    def n_trials(self) -> int:
        if self.budget is not None:
            return self.budget
        n = 1
        for dist in self.space.values():
            n *= len(dist.choices)  # type: ignore[union-attr]
        return n

def _check_point(space: dict[str, Any], point: dict[str, Any], where: str) -> None:
    """Each value of an enqueued trial names a searched path and lies in its distribution."""
    if not point:
        raise ValueError(f"{where}: empty; fix at least one searched value, e.g. {{{next(iter(space))}: ...}}")
    for path, value in point.items():
        dist = space.get(path)
        if dist is None:
            raise ValueError(f"{where}: {path} is not searched; enqueue only paths of search.space")
        if isinstance(dist, CategoricalDist):
            if value not in dist.choices:
                raise ValueError(f"{where}: {path}={value!r} is not among its choices {dist.choices}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not dist.low <= value <= dist.high:
            raise ValueError(f"{where}: {path}={value!r} is outside [{dist.low}, {dist.high}]")


def _check_conditions(space: dict[str, Any]) -> None:
    """A ``when`` on a searched path must name an earlier categorical entry and some of its choices."""
    order = list(space)
    for path, dist in space.items():
        for cond, allowed in (dist.when or {}).items():
            if cond not in space:
                continue  # a fixed setting of the study: checked against the study at load time
            target = space[cond]
            if order.index(cond) > order.index(path):
                raise ValueError(f"search.space.{path}: its condition on {cond} must come after {cond} in the space")
            if not isinstance(target, CategoricalDist):
                raise ValueError(f"search.space.{path}: a condition needs a categorical entry, {cond} is {target.type}")
            missing = [v for v in allowed if v not in target.choices]
            if missing:
                raise ValueError(f"search.space.{path}: when {cond} is {missing[0]!r}, which is not among its choices")
