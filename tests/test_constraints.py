"""search.constraints and the majority-class floor: parsed and checked at load, told to Optuna's samplers
(which then sample infeasible regions less), and honoured by the front and the hypervolume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from kdtune import store
from kdtune.config import load_study, validate_study
from kdtune.errors import ConfigError
from kdtune.feasibility import Feasibility, majority_rate
from kdtune.metrics import trial_metric_names
from kdtune.pareto import front_mask, hypervolume
from kdtune.records import Objective, TrialRecord
from kdtune.report import hypervolume_of
from kdtune.report._analysis import Space, knee_index
from kdtune.spec import Constraint, SearchSpec
from kdtune.sweep import DefineByRun, build_sampler, build_searcher
from tests.studies import base_study, write_study

# ---------------------------------------------------------------- (a) parsed and checked at load


def study_with(tmp_path, constraints) -> str:
    raw = base_study()
    raw["search"]["constraints"] = constraints
    return write_study(tmp_path / "study.yaml", raw)


def test_constraints_are_parsed_into_typed_bounds_and_written_back_as_given(tmp_path):
    texts = ["val/acc >= 0.9", "latency/ms_b1<=0.05", "val/robust_acc@0.1 > 0.25", " model/params < 1e5 "]
    cfg = load_study(study_with(tmp_path, texts))
    assert cfg.search.constraints == [
        Constraint("val/acc", ">=", 0.9), Constraint("latency/ms_b1", "<=", 0.05),
        Constraint("val/robust_acc@0.1", ">", 0.25), Constraint("model/params", "<", 100000.0),
    ]
    raw = cfg.to_raw()
    assert raw["search"]["constraints"] == ["val/acc >= 0.9", "latency/ms_b1 <= 0.05", "val/robust_acc@0.1 > 0.25",
                                            "model/params < 100000.0"]
    assert validate_study(raw, source="raw") == cfg  # the written form parses back to the same bounds
    assert load_study(write_study(tmp_path / "plain.yaml", base_study())).search.constraints == []


@pytest.mark.parametrize(("text", "expect"), [
    ("val/acc => 0.9", "search.constraints[1]: 'val/acc => 0.9' is not a constraint; write '<metric> <op> <number>'"),
    ("val/acc == 0.9", "search.constraints[1]: 'val/acc == 0.9' is not a constraint"),
    ("val/acc >= high", "search.constraints[1]: 'val/acc >= high': the threshold 'high' is not a finite number"),
    ("val/acc >= nan", "the threshold 'nan' is not a finite number"),
    ("val/acc", "search.constraints[1]: 'val/acc' is not a constraint"),
    ({"metric": "val/acc", "min": 0.9}, "search.constraints[1]: {'metric': 'val/acc', 'min': 0.9} is not a constraint"),
    ("val/accuracy >= 0.9", "search.constraints[1]: unknown metric 'val/accuracy' (did you mean 'val/acc'?); known: "),
    ("test/acc >= 0.9", "search.constraints[1]: 'test/acc' is measured on the test split, and constraints may only be"),
    ("val/acc >= 90", "search.constraints[1]: 'val/acc >= 90.0': accuracies are shares in [0, 1]"),
])
def test_a_bad_constraint_fails_at_load_with_its_path_and_a_hint(tmp_path, text, expect):
    with pytest.raises(ConfigError) as info:
        load_study(study_with(tmp_path, ["latency/ms_b1 <= 1.0", text]))
    message = str(info.value)
    assert expect in message and "\n" not in message


# ---------------------------------------------------------------- the bounds themselves


@pytest.mark.parametrize(("op", "value", "holds"), [
    (">=", 0.5, True), (">=", 0.4999, False), (">", 0.5, False), (">", 0.5001, True),
    ("<=", 0.5, True), ("<=", 0.5001, False), ("<", 0.5, False), ("<", 0.4999, True),
    (">=", math.nan, False), ("<=", None, False),
])
def test_a_bounds_violation_is_positive_exactly_when_it_does_not_hold(op, value, holds):
    bound = Constraint("val/acc", op, 0.5)
    assert bound.holds(value) is holds
    assert (bound.violation(value) <= 0) is holds  # Optuna's convention: feasible iff <= 0


def test_the_violation_is_relative_to_the_threshold():
    assert Constraint("val/acc", ">=", 0.8).violation(0.6) == pytest.approx(0.25)  # (0.8 - 0.6) / 0.8
    assert Constraint("latency/ms_b1", "<=", 0.05).violation(0.06) == pytest.approx(0.2)  # (0.06 - 0.05) / 0.05
    both = Feasibility((Constraint("val/acc", ">=", 0.8), Constraint("latency/ms_b1", "<=", 0.05)))
    assert both.violation({"val/acc": 0.6, "latency/ms_b1": 0.06}) == pytest.approx(0.25)  # the larger one
    assert both.violation({"val/acc": 0.9, "latency/ms_b1": 0.04}) == pytest.approx(max(-0.1 / 0.8, -0.01 / 0.05))
    assert Feasibility().violation({"val/acc": 0.0}) == 0.0


# ---------------------------------------------------------------- (d) the majority-class rate


def test_the_majority_rate_is_the_share_of_the_most_frequent_label():
    labels = np.array([3, 1, 3, 0, 3, 2, 1, 3])  # four 3s of eight
    assert majority_rate(labels) == 0.5
    assert majority_rate(np.array([7] * 3 + [2] * 7)) == 0.7
    assert majority_rate(np.array([], dtype=int)) is None


def test_a_student_exactly_at_the_majority_rate_is_infeasible():
    """136 of 1000 right is what always guessing a class of 136 examples scores: not above it."""
    labels = np.array([0] * 136 + [1] * 130 + list(range(2, 10)) * 91 + [1] * 6)
    assert len(labels) == 1000
    rate = majority_rate(labels)
    feasibility = Feasibility(majority_rate=rate)
    at, above = (TrialRecord(t, "COMPLETE", metrics={"val/acc": hits / 1000}) for t, hits in (("at", 136), ("up", 137)))
    assert rate == 136 / 1000 and feasibility.mask([at, above]).tolist() == [False, True]
    assert feasibility.floor == Constraint("val/acc", ">", 0.136)


# ---------------------------------------------------------------- (c) the front and the hypervolume

ACC_LATENCY = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]


def records() -> list[TrialRecord]:
    def trial(trial_id, acc, ms):
        return TrialRecord(trial_id, "COMPLETE", metrics={"val/acc": acc, "latency/ms_b1": ms})

    return [
        trial("chance", 0.136, 0.010),  # at the majority rate, and faster than anyone: dominates "quick"
        trial("quick", 0.80, 0.020),
        trial("good", 0.90, 0.030),
        trial("slow", 0.95, 0.060),  # dominates nothing else but is above the latency bound
        trial("worse", 0.85, 0.030),  # dominated by "good"
        TrialRecord("broken", "FAILED", error="loss became NaN"),
    ]


FEASIBILITY = Feasibility((Constraint("latency/ms_b1", "<=", 0.05),), majority_rate=0.136)


def test_infeasible_trials_are_never_on_the_front_even_where_they_dominate():
    recs = records()
    assert front_mask(recs, ACC_LATENCY).tolist() == [True, True, True, True, False, False]  # without constraints
    feasible = FEASIBILITY.mask(recs)
    assert feasible.tolist() == [False, True, True, False, True, False]
    assert front_mask(recs, ACC_LATENCY, feasible).tolist() == [False, True, True, False, False, False]


def test_a_trial_dominated_only_by_an_infeasible_one_returns_to_the_front():
    recs = [TrialRecord("fast_wrong", "COMPLETE", metrics={"val/acc": 0.10, "latency/ms_b1": 0.01}),
            TrialRecord("slower_worse", "COMPLETE", metrics={"val/acc": 0.09, "latency/ms_b1": 0.02}),
            TrialRecord("useful", "COMPLETE", metrics={"val/acc": 0.70, "latency/ms_b1": 0.03})]
    feasible = Feasibility(majority_rate=0.08).mask(recs)  # only the majority floor: all three are above it
    assert front_mask(recs, ACC_LATENCY, feasible).tolist() == [True, False, True]
    feasible = Feasibility(majority_rate=0.10).mask(recs)  # fast_wrong is at it, slower_worse below
    assert front_mask(recs, ACC_LATENCY, feasible).tolist() == [False, False, True]


def test_the_hypervolume_and_the_pick_leave_infeasible_trials_out():
    recs, teacher = records(), {"latency/ms_b1": 0.1}
    feasible = FEASIBILITY.mask(recs)
    # by hand, in the normalized space (accuracy as is, latency / the teacher's 0.1; reference (0, 1)):
    # feasible points quick (0.8, 0.2), good (0.9, 0.3), worse (0.85, 0.3, dominated)
    by_hand = 0.8 * (1 - 0.2) + (0.9 - 0.8) * (1 - 0.3)
    assert hypervolume_of(recs, ACC_LATENCY, teacher, feasible) == pytest.approx(by_hand)
    assert hypervolume_of(recs, ACC_LATENCY, teacher) > by_hand  # "chance" and "slow" would add volume
    space = Space.of(recs, ACC_LATENCY, teacher, feasible)
    assert space.hypervolume() == pytest.approx(by_hand)
    assert sorted(space.distances()) == [1, 2, 4]
    knee = knee_index(space, front_mask(recs, ACC_LATENCY, feasible))
    assert recs[knee].trial_id in ("quick", "good") and feasible[knee]
    assert hypervolume(np.array([[0.8, 0.2], [0.9, 0.3]]), ["max", "min"], [0.0, 1.0]) == pytest.approx(by_hand)


def test_no_feasible_trial_means_no_front_and_no_volume():
    recs = records()
    nothing = Feasibility((Constraint("val/acc", ">=", 0.99),)).mask(recs)
    assert not front_mask(recs, ACC_LATENCY, nothing).any()
    assert hypervolume_of(recs, ACC_LATENCY, {"latency/ms_b1": 0.1}, nothing) == 0.0
    assert knee_index(Space.of(recs, ACC_LATENCY, {}, nothing), front_mask(recs, ACC_LATENCY, nothing)) is None


# ---------------------------------------------------------------- (b) the samplers are steered

TOY_BOUND = Constraint("val/acc", ">=", 0.5)


def toy_search(kind: str, n_trials: int, **sampler) -> SearchSpec:
    return SearchSpec.model_validate({
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0.0, "high": 1.0}},
        "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "latency/ms_b1", "mode": "min"}],
        "sampler": {"name": kind, **sampler}, "budget": n_trials,
    })


def infeasible_draws(
    search: SearchSpec, seed: int, feasibility: Feasibility | None, after: int, bound: Constraint = TOY_BOUND
) -> int:
    """A toy student: accuracy x, latency x^2 + y/10, so the fast ones are the inaccurate ones, and x below
    ``bound``'s threshold breaks it. Runs kdtune's sampler through Optuna's ask/tell the way the searcher does (the
    constraint set on the running trial, then the outcome told) and counts the draws that break ``bound``
    after the first ``after`` (random) trials; ``feasibility`` None tells the sampler nothing."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=build_sampler(search, seed))
    suggest, xs = DefineByRun(search, {}), []
    for _ in range(search.n_trials):
        trial = study.ask()
        suggest(trial)
        x, y = trial.params["x"], trial.params["y"]
        metrics = {"val/acc": x, "latency/ms_b1": x * x + y / 10}
        if feasibility is not None:
            store.write_constraint(trial, feasibility.violation(metrics))
        study.tell(trial, [metrics["val/acc"], metrics["latency/ms_b1"]])
        xs.append(x)
    return sum(not bound.holds(x) for x in xs[after:])


@pytest.mark.parametrize(("kind", "sampler", "after"), [
    ("tpe", {}, 10),  # kdtune's TPE: min(10, budget // 3) random trials first
    ("nsga2", {"population_size": 10}, 10),  # the first generation is random
])
def test_constraints_make_the_sampler_draw_less_from_the_infeasible_region(kind, sampler, after):
    search, seeds = toy_search(kind, 30, **sampler), range(5)
    feasibility = Feasibility((TOY_BOUND,), majority_rate=0.1)
    free = sum(infeasible_draws(search, seed, None, after) for seed in seeds)
    steered = sum(infeasible_draws(search, seed, feasibility, after) for seed in seeds)
    # measured with Optuna 5.1: tpe 30 -> 13, nsga2 53 -> 35 of 100 draws; equal counts if nothing is told
    assert steered < free


@pytest.mark.slow  # a GP fit per suggestion: about 25 s on 2 cores
def test_constraints_steer_the_gaussian_process_too():
    search, bound = toy_search("gp", 14, n_startup_trials=6), Constraint("val/acc", ">=", 0.7)
    free = sum(infeasible_draws(search, seed, None, 6, bound) for seed in range(2))
    steered = sum(infeasible_draws(search, seed, Feasibility((bound,)), 6, bound) for seed in range(2))
    assert steered < free  # measured with Optuna 5.1: 7 -> 0 of 16 draws


def test_the_searcher_tells_optuna_each_complete_trials_feasibility(tmp_path):
    """kdtune's OptunaSearch sets the constraint on the running trial before telling its outcome (no Ray
    cluster needed: the searcher alone)."""
    raw = base_study()
    raw["search"].update(constraints=["val/acc >= 0.9"], sampler={"name": "tpe"})
    cfg = validate_study(raw, source="test")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = build_searcher(cfg, url, Feasibility(tuple(cfg.search.constraints), majority_rate=0.2))
    result = {name: 0.5 for name in trial_metric_names(cfg.evaluation)} | {"provenance/method": "hinton"}
    for trial_id, acc in (("low", 0.8), ("high", 0.95)):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, result=result | {"val/acc": acc})
    stored = optuna.load_study(study_name=cfg.name, storage=url).trials
    assert [t.state.name for t in stored] == ["COMPLETE", "COMPLETE"]
    assert stored[0].constraints == {"kdtune": pytest.approx((0.9 - 0.8) / 0.9)}
    assert stored[1].constraints == {"kdtune": pytest.approx((0.9 - 0.95) / 0.9)}  # the larger of the two bounds


def test_a_study_with_trials_told_without_constraints_is_not_steered(tmp_path):
    """Optuna's GP refuses complete trials with different constraint names: a study from before kdtune kept
    constraints gets none, rather than a mix."""
    raw = base_study()
    raw["search"]["sampler"] = {"name": "tpe"}
    cfg = validate_study(raw, source="test")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    old = optuna.create_study(study_name=cfg.name, storage=url, directions=["maximize"])
    old.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    assert not store.carries_constraints(old)
    searcher = build_searcher(cfg, url, Feasibility(majority_rate=0.2))
    searcher.suggest("new")
    result = {name: 0.5 for name in trial_metric_names(cfg.evaluation)} | {"provenance/method": "hinton"}
    searcher.on_trial_complete("new", result=result)
    stored = optuna.load_study(study_name=cfg.name, storage=url).trials
    assert [t.constraints for t in stored] == [{}, {}]


# ---------------------------------------------------------------- the floor, kept for `kdtune report`


def test_the_majority_rate_is_kept_in_the_studys_storage_and_a_rebuilt_report_reads_it(tmp_path):
    import torch

    from kdtune.study._stored import keep_majority_rate

    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def run_over(labels, *, create=True):
        study = store.open_study(url, "floor", ["maximize"], create=create)
        data = SimpleNamespace(val=SimpleNamespace(y=torch.tensor(labels)))
        return SimpleNamespace(optuna_study=study, data=data, majority_rate=None)

    assert store.majority_rate(run_over([0]).optuna_study) is None  # nothing kept yet
    sweep = run_over([2, 2, 2, 1])
    keep_majority_rate(sweep)  # a study run measures its data and keeps the rate
    assert sweep.majority_rate == 0.75 and store.majority_rate(sweep.optuna_study) == 0.75
    report = run_over([0, 1], create=False)
    keep_majority_rate(report, stored_first=True)  # a rebuilt report applies the floor the sweep did
    assert report.majority_rate == 0.75
