"""The search section: distributions, sampler, objectives and budget."""

from __future__ import annotations

from typing import Annotated, Literal, Union

import pydantic
from pydantic import Field

from kdtune.config._specs import PositiveInt, _Strict
from kdtune.records import Objective


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


