"""Which Optuna sampler a search section gets."""

from __future__ import annotations

import optuna
import pytest

from kdtune.config import SearchSpec
from kdtune.sweep import build_sampler

OBJECTIVES = [{"metric": "val/acc", "mode": "max"}, {"metric": "latency/ms_b1", "mode": "min"}]
FLAT = {"method.temperature": {"type": "float", "low": 1.0, "high": 10.0}}
CONDITIONAL = {
    "method.name": {"type": "categorical", "choices": ["hinton", "ce"]},
    "method.temperature": {"type": "float", "low": 1.0, "high": 10.0, "when": {"method.name": ["hinton"]}},
}


def spec(space, sampler=None, budget=20):
    raw = {"space": space, "objectives": OBJECTIVES, "budget": budget}
    return SearchSpec.model_validate(raw | ({"sampler": sampler} if sampler else {}))


def test_the_default_is_a_gaussian_process_with_ten_random_trials_first():
    sampler = build_sampler(spec(FLAT), seed=0)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    assert sampler._n_startup_trials == 10


def test_conditional_spaces_get_grouped_multivariate_tpe():
    sampler = build_sampler(spec(CONDITIONAL), seed=0)
    assert isinstance(sampler, optuna.samplers.TPESampler)


@pytest.mark.parametrize(("name", "cls"), [("gp", optuna.samplers.GPSampler), ("tpe", optuna.samplers.TPESampler),
                                           ("random", optuna.samplers.RandomSampler),
                                           ("nsga2", optuna.samplers.NSGAIISampler)])
def test_a_named_sampler_is_used_as_named(name, cls):
    assert isinstance(build_sampler(spec(CONDITIONAL, {"name": name}), seed=0), cls)


def test_the_default_sampler_searches_a_multi_objective_space():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=build_sampler(spec(FLAT), seed=0))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=12)
    assert len(study.best_trials) >= 1 and all(t.state.name == "COMPLETE" for t in study.trials)


@pytest.mark.parametrize(("point", "problem"), [
    ({}, "search.enqueue[0]: empty"),
    ({"nope": 1}, "search.enqueue[0]: nope is not searched"),
    ({"method.name": "ce"}, "search.enqueue[0]: method.name='ce' is not among its choices"),
    ({"x": 7.0}, "search.enqueue[0]: x=7.0 is outside [0.0, 1.0]"),
    ({"x": "0.5"}, "search.enqueue[0]: x='0.5' is outside"),
])
def test_an_enqueued_trial_must_fix_searched_values_within_their_distributions(point, problem):
    space = {"method.name": {"type": "categorical", "choices": ["hinton", "trades"]},
             "x": {"type": "float", "low": 0.0, "high": 1.0}}
    objectives = [{"metric": "val/acc", "mode": "max"}]
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        SearchSpec.model_validate({"space": space, "objectives": objectives, "budget": 3, "enqueue": [point]})
    ok = SearchSpec.model_validate({"space": space, "objectives": objectives, "budget": 3,
                                    "enqueue": [{"method.name": "trades"}, {"x": 0.25}]})
    assert ok.enqueue == [{"method.name": "trades"}, {"x": 0.25}]
    with pytest.raises(ValueError, match="the grid sampler runs every combination"):
        SearchSpec.model_validate({"space": {"method.name": space["method.name"]}, "objectives": objectives,
                                   "sampler": {"name": "grid"}, "enqueue": [{"method.name": "trades"}]})
