"""MO-ASHA without a Ray cluster: the scheduler's decisions on scripted rung results (and after a restore,
against what is stored), the searcher's PRUNED record and Optuna state, the trainable's rung reports and the
cheap rung measurements, the MLflow end of a stopped trial, and the config around it."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import optuna
import pytest
import torch

from kdtune import store
from kdtune.config import validate_study
from kdtune.metrics import RUNG_EPOCH, at_rung, rung_problem
from kdtune.records import Objective
from kdtune.spec import MoashaSchedulerSpec
from kdtune.sweep import MoashaScheduler, build_scheduler, pruned_at, trial_record
from kdtune.sweep._trainable import EpochReporter

OBJECTIVES = [Objective("val/acc", "max"), Objective("latency/ms_b1", "min")]
CONTINUE, STOP = "CONTINUE", "STOP"


@pytest.fixture
def storage(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    store.open_study(url, "s", ["maximize", "minimize"])  # the driver creates the study before the sweep
    return url


def rung(epoch: int, acc: float, latency: float) -> dict:
    """A rung result as the trainable reports it (with per-epoch stats that must not be ranked)."""
    return {"epoch": epoch, "val/acc": 0.0, RUNG_EPOCH: float(epoch), at_rung("val/acc"): acc,
            at_rung("latency/ms_b1"): latency}


def result_of(sched: MoashaScheduler, trial_id: str, result: dict) -> str:
    return sched.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result)


def test_decisions_on_a_scripted_sequence_of_rung_results(storage):
    sched = MoashaScheduler(OBJECTIVES, eta=2, storage=storage, study_name="s")
    assert result_of(sched, "t1", rung(1, 0.80, 2.0)) == CONTINUE  # the first at a rung always continues
    assert result_of(sched, "t2", rung(1, 0.70, 3.0)) == STOP  # dominated by t1; ceil(2/2) = 1 continues
    assert result_of(sched, "t3", rung(1, 0.90, 2.5)) == CONTINUE  # front {t3, t1}: t3 first (best accuracy)
    # front {t3, t4} (t4 dominates t1); ceil(4/2) = 2 continue: t3 (seed) and t4 (the other front point)
    assert result_of(sched, "t4", rung(1, 0.85, 1.0)) == CONTINUE
    assert result_of(sched, "t1", rung(2, 0.85, 2.0)) == CONTINUE  # alone at the epoch-2 rung
    # a per-epoch report (val/acc and all) or the final report is not a rung: never ranked, never stored
    assert result_of(sched, "t2", {"epoch": 3, "val/acc": 0.1}) == CONTINUE
    stored = store.read_rungs(store.open_study(storage, "s", ["maximize", "minimize"], create=False))
    assert stored == {
        "t1": {1: {"val/acc": 0.80, "latency/ms_b1": 2.0}, 2: {"val/acc": 0.85, "latency/ms_b1": 2.0}},
        "t2": {1: {"val/acc": 0.70, "latency/ms_b1": 3.0}}, "t3": {1: {"val/acc": 0.90, "latency/ms_b1": 2.5}},
        "t4": {1: {"val/acc": 0.85, "latency/ms_b1": 1.0}},
    }


def test_a_restored_scheduler_ranks_against_the_stored_rung_results(storage):
    sched = MoashaScheduler(OBJECTIVES, eta=2, storage=storage, study_name="s")
    pickled = pickle.dumps(sched)  # what Tune keeps in tuner.pkl when the sweep starts: no state
    for trial, values in {"t1": (0.80, 2.0), "t2": (0.70, 3.0), "t3": (0.90, 2.5), "t4": (0.85, 1.0)}.items():
        result_of(sched, trial, rung(1, *values))
    restored = pickle.loads(pickle.dumps(sched))  # state is never pickled, whenever Tune pickles it
    assert restored._rungs is None and pickle.loads(pickled)._rungs is None
    # t5 (0.75, 2.2) is dominated by t1 and t4: fronts [t3, t4], [t1], [t5], [t2]; ceil(5/2) = 3 continue and
    # t5 is fourth. Alone (nothing loaded from the storage) it would have continued.
    assert result_of(restored, "t5", rung(1, 0.75, 2.2)) == STOP
    fresh = MoashaScheduler(OBJECTIVES, eta=2, storage=storage, study_name="s")  # a later sweep of the study
    assert result_of(fresh, "t6", rung(1, 0.95, 0.5)) == CONTINUE  # dominates everyone
    assert len(fresh.rungs()) == 6


def test_a_trial_that_reports_a_rung_again_replaces_its_own_entry(storage):
    sched = MoashaScheduler(OBJECTIVES, eta=2, storage=storage, study_name="s")
    result_of(sched, "t1", rung(1, 0.80, 2.0))
    result_of(sched, "t2", rung(1, 0.70, 3.0))
    # t2 retried from a checkpoint before the rung reports it again, better: 2 trials at the rung, not 3
    assert result_of(sched, "t2", rung(1, 0.90, 1.0)) == CONTINUE
    assert sched.rungs()["t2"] == {1: {"val/acc": 0.90, "latency/ms_b1": 1.0}} and len(sched.rungs()) == 2


def test_non_finite_rung_values_stop_the_trial_unranked(storage):
    sched = MoashaScheduler(OBJECTIVES, eta=2, storage=storage, study_name="s")
    assert result_of(sched, "t1", rung(1, float("nan"), 2.0)) == STOP
    assert sched.rungs() == {}


def test_fifo_is_the_default_scheduler(study_dict, storage):
    from ray.tune.schedulers import FIFOScheduler

    cfg = validate_study(study_dict, source="s")
    assert cfg.search.scheduler.name == "fifo" and type(build_scheduler(cfg, storage)) is FIFOScheduler
    study_dict["student"]["epochs"] = 4
    study_dict["search"]["scheduler"] = {"name": "moasha", "reduction_factor": 2}
    sched = build_scheduler(validate_study(study_dict, source="s"), storage)
    assert isinstance(sched, MoashaScheduler) and sched.eta == 2 and sched.metrics == ["val/acc"]


@pytest.mark.parametrize(("min_epochs", "eta", "epochs", "expected"), [
    (1, 3, 10, [1, 3, 9]), (1, 3, 9, [1, 3]), (2, 2, 10, [2, 4, 8]), (1, 2, 2, [1]), (3, 3, 3, []),
])
def test_rungs_sit_at_min_epochs_times_powers_of_eta_below_the_last_epoch(min_epochs, eta, epochs, expected):
    spec = MoashaSchedulerSpec(name="moasha", min_epochs=min_epochs, reduction_factor=eta)
    assert spec.rungs(epochs) == expected


def test_which_objectives_a_rung_can_measure():
    for name in ("val/acc", "val/robust_acc@0.1", "val/fgsm_acc@0.05", "latency/ms_b256", "model/params",
                 "model/flops", "model/bytes"):
        assert rung_problem(name) is None, name
    for name in ("jacobian/norm", "val/acc/mean", "latency/spread_ms_b1", "test/acc"):
        assert "cannot be measured at an early-stopping rung" in rung_problem(name), name


def test_a_stopped_trial_is_recorded_pruned_at_its_rung_without_metrics():
    known = {"val/acc", "latency/ms_b1"}
    stopped = {**rung(3, 0.8, 2.0), "done": True}  # Tune marks done the result it stops a trial on
    record = trial_record("t1", {"a": 1}, stopped, ray_error=False, known=known)
    assert (record.status, record.epochs, record.metrics, record.error) == ("PRUNED", 3, {}, None)
    assert pruned_at(stopped) == 3
    assert pruned_at(rung(3, 0.8, 2.0)) is None  # a rung result it went on from (e.g. cut short by Ctrl-C)
    final = {"val/acc": 0.9, "latency/ms_b1": 1.0, "epoch": 10, "done": True, "provenance/method": "hinton"}
    assert trial_record("t2", {}, final, ray_error=False, known=known).epochs == 10 and pruned_at(final) is None
    assert trial_record("t3", {}, stopped, ray_error=True, known=known).status == "FAILED"


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp", "nsga2", "grid"])
def test_the_searcher_tells_optuna_pruned_and_stores_the_record(tmp_path, study_dict, sampler):
    from kdtune.sweep import build_searcher

    study_dict["student"]["epochs"] = 4
    study_dict["search"]["scheduler"] = {"name": "moasha"}
    study_dict["search"]["objectives"] = [{"metric": "val/acc", "mode": "max"},
                                          {"metric": "latency/ms_b1", "mode": "min"}]
    study_dict["search"]["sampler"] = {"name": sampler, "n_startup_trials": 1} if sampler in ("tpe", "gp") else \
        {"name": sampler}
    if sampler == "grid":
        study_dict["search"]["space"] = {"method.temperature": {"type": "categorical", "choices": [1.0, 2.0, 4.0]}}
    cfg = validate_study(study_dict, source="s")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = build_searcher(cfg, url)
    assert searcher.suggest("t1") is not None and searcher.suggest("t2") is not None
    searcher.on_trial_complete("t1", result={**rung(1, 0.5, 2.0), "done": True})
    final = {m: 0.5 for m in searcher._known} | {"epoch": 4, "done": True, "provenance/method": "hinton"}
    searcher.on_trial_complete("t2", result=final)
    searcher._completed_trials.discard("t1")  # as restored from an experiment state older than the tell
    searcher.on_trial_complete("t1", result={**rung(1, 0.5, 2.0), "done": True})  # told twice: logged, not raised
    study = optuna.load_study(study_name="mini", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert study.trials[0].values is None  # no truncated objective values
    records = store.read_records(study, tmp_path)
    first = records[0]
    assert (first.trial_id, first.status, first.epochs, first.metrics) == ("t1", "PRUNED", 1, {})
    assert records[1].status == "COMPLETE" and records[1].epochs == 4
    assert searcher.suggest("t3") is not None  # the sampler goes on with a pruned trial in its study


class _Probe:
    epochs = frozenset({1, 3})

    def __call__(self, state):
        return {at_rung("val/acc"): 0.5, RUNG_EPOCH: float(state.epoch)}


def test_the_trainable_reports_at_every_rung_epoch_and_batches_the_others(monkeypatch):
    reports = []
    monkeypatch.setattr("kdtune.sweep._trainable.tune.report", lambda metrics, **kw: reports.append(metrics))
    monkeypatch.setattr("kdtune.sweep._trainable.FitState.save", lambda self, path: None)
    reporter = EpochReporter(1e9, probe=_Probe(), clock=lambda: 0.0)  # a report only where a rung forces it
    for epoch in range(1, 6):
        reporter(SimpleNamespace(epoch=epoch, history=[{"val/acc": epoch / 10}], save=lambda path: None))
    assert [r["epoch"] for r in reports] == [1, 3]
    assert reports[1][RUNG_EPOCH] == 3.0 and reports[1][at_rung("val/acc")] == 0.5
    assert "kdtune/epochs" in reports[1]  # epoch 2 rode along with the rung's report
    assert [e["epoch"] for e in json.loads(reporter.unreported()["kdtune/epochs"])] == [4, 5]


def test_cheap_rung_measurements_leave_the_training_rng_alone(small_data):
    from kdtune.models import build_model
    from kdtune.rungs import RungProbe
    from kdtune.spec import LatencySpec

    objectives = ["val/acc", "val/robust_acc@0.1", "val/fgsm_acc@0.1", "latency/ms_b1", "model/params"]
    info = small_data.info
    built = []

    def build():
        built.append(1)
        return build_model("mlp", {"hidden": [8]}, info)

    spec = MoashaSchedulerSpec(name="moasha", rung_subset=50, rung_pgd_steps=2)
    latency = LatencySpec(runtime="torch", batch_sizes=[1, 256], warmup=1, repeats=10, n_calls=2)
    probe = RungProbe(objectives, epochs=[1, 3], build=build, data=small_data, spec=spec, latency=latency, seed=0,
                      device=torch.device("cpu"))
    assert probe.latency.repeats == 3 and probe.latency.batch_sizes == [1]  # only what an objective names
    weights = build_model("mlp", {"hidden": [8]}, info).state_dict()
    rng = torch.get_rng_state()
    first = probe(SimpleNamespace(epoch=1, model=weights, history=[{"val/acc": 0.42}]))
    assert torch.equal(torch.get_rng_state(), rng)  # the training's random stream goes on untouched
    assert first[at_rung("val/acc")] == 0.42 and first[RUNG_EPOCH] == 1.0  # the epoch's own, full val split
    assert first[at_rung("model/params")] == 784 * 8 + 8 + 8 * 10 + 10
    assert 0 <= first[at_rung("val/robust_acc@0.1")] <= first[at_rung("val/fgsm_acc@0.1")] + 0.1
    assert first[at_rung("latency/ms_b1")] > 0
    again = probe(SimpleNamespace(epoch=3, model=weights, history=[{"val/acc": 0.5}]))
    assert again[at_rung("latency/ms_b1")] == first[at_rung("latency/ms_b1")]  # measured once per trial
    assert again[at_rung("val/robust_acc@0.1")] == first[at_rung("val/robust_acc@0.1")]  # fixed subset, seed
    assert len(built) == 1


def test_rung_costs_are_measured_once_per_architecture_and_shared_through_the_cache(small_data, tmp_path):
    from kdtune.models import build_model
    from kdtune.rungs import RungProbe, costs_file
    from kdtune.spec import LatencySpec, ModelSpec

    objectives = ["val/acc", "latency/ms_b1", "model/params"]
    latency = LatencySpec(runtime="torch", batch_sizes=[1], warmup=1, repeats=2, n_calls=2)
    spec = MoashaSchedulerSpec(name="moasha", rung_subset=50, rung_pgd_steps=2)

    def rung_values(hidden: int) -> dict[str, float]:
        model = ModelSpec.model_validate({"name": "mlp", "hidden": [hidden]})
        where = costs_file(tmp_path, study="s", model=model, input_shape=small_data.input_shape, latency=latency,
                           device=torch.device("cpu"))
        probe = RungProbe(objectives, epochs=[1], build=lambda: build_model("mlp", {"hidden": [hidden]},
                          small_data.info), data=small_data, spec=spec, latency=latency, seed=0,
                          device=torch.device("cpu"), costs_file=where)
        weights = build_model("mlp", {"hidden": [hidden]}, small_data.info).state_dict()
        return probe(SimpleNamespace(epoch=1, model=weights, history=[{"val/acc": 0.5}]))

    first, second, other = rung_values(8), rung_values(8), rung_values(16)
    # a second trial of the same architecture reads the first's latency (one noisy measurement, not two)
    assert second[at_rung("latency/ms_b1")] == first[at_rung("latency/ms_b1")]
    assert other[at_rung("model/params")] == 784 * 16 + 16 + 16 * 10 + 10  # another architecture: its own
    assert len(list((tmp_path / "rung_costs").glob("*.pt"))) == 2


def test_a_stopped_trials_run_ends_killed_with_its_rung(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from kdtune.tracking import PRUNED_TAG, Tracker

    tracker = Tracker(mlflow_uri, "exp", artifact_root=tmp_path / "artifacts")
    tracker.start_sweep("sweep-001", {}, {})
    for trial in ("t1", "t2"):
        tracker.start_trial(trial, {}, {"trial_id": trial})
    tracker.end_trial("t1", pruned_at_epoch=3)
    tracker.end_trial("t2")
    tracker.end_sweep()
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("exp").experiment_id
    runs = {r.data.tags.get("trial_id"): r for r in client.search_runs([experiment])}
    assert runs["t1"].info.status == "KILLED" and runs["t1"].data.tags[PRUNED_TAG] == "3"
    assert runs["t2"].info.status == "FINISHED" and PRUNED_TAG not in runs["t2"].data.tags


def test_pruned_trials_are_never_on_the_front_and_the_report_lists_them_by_rung(tmp_path):
    import pandas as pd

    from kdtune.pareto import front_mask
    from kdtune.records import TrialRecord
    from kdtune.report import hypervolume_of, write_report

    def complete(trial_id, acc, latency):
        metrics = {"val/acc": acc, "latency/ms_b1": latency}
        return TrialRecord(trial_id, "COMPLETE", {"a": 1.0}, metrics, epochs=4,
                           rungs={1: {"val/acc": acc - 0.1, "latency/ms_b1": latency}})

    # p1 and p2 stopped at the epoch-1 rung, p3 at epoch 2; p3 carries (impossibly) final metrics that would
    # dominate every complete trial: a PRUNED record is never on the front, nor in the hypervolume
    records = [
        complete("c1", 0.8, 2.0), complete("c2", 0.9, 3.0),
        TrialRecord("p1", "PRUNED", {"a": 2.0}, epochs=1, rungs={1: {"val/acc": 0.3, "latency/ms_b1": 4.0}}),
        TrialRecord("p2", "PRUNED", {"a": 3.0}, epochs=1, rungs={1: {"val/acc": 0.4, "latency/ms_b1": 5.0}}),
        TrialRecord("p3", "PRUNED", {"a": 4.0}, {"val/acc": 1.0, "latency/ms_b1": 0.1}, epochs=2,
                    rungs={1: {"val/acc": 0.6, "latency/ms_b1": 1.0}, 2: {"val/acc": 0.5, "latency/ms_b1": 1.0}}),
        TrialRecord("f1", "FAILED", {"a": 5.0}, error="loss became non-finite"),
    ]
    assert front_mask(records, OBJECTIVES).tolist() == [True, True, False, False, False, False]
    teacher = {"val/acc": 0.95, "latency/ms_b1": 4.0}
    only_complete = hypervolume_of(records[:2], OBJECTIVES, teacher)
    assert only_complete > 0 and hypervolume_of(records, OBJECTIVES, teacher) == pytest.approx(only_complete)
    out = tmp_path / "report"
    write_report(out, study_name="s", records=records, objectives=OBJECTIVES, search_params=["a"],
                 teacher_metrics=teacher, meta={}, metric_columns=["val/acc", "latency/ms_b1"], interactive=False)
    trials = pd.read_csv(out / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")
    assert trials.loc[["p1", "p2", "p3"], "status"].tolist() == ["PRUNED"] * 3
    assert trials.loc[["c1", "p1", "p3"], "epochs"].tolist() == [4, 1, 2]
    assert trials.loc["p3", ["val/acc", "latency/ms_b1"]].isna().all()  # no metrics shown for a pruned trial
    assert set(pd.read_csv(out / "pareto.csv", dtype={"trial_id": str})["trial_id"]) == {"c1", "c2"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "6 trials: 2 complete, 3 stopped early, 1 failed, 0 infeasible, 2 on the Pareto front." in md
    failed = md.split("## Failed trials", 1)[1].split("\n## ", 1)[0]
    assert "f1" in failed and "p1" not in failed  # stopped early is not failed
    stopped = md.split("## Stopped early", 1)[1].split("\n## ", 1)[0]
    # by rung: epoch 1 reached by all five trials that have rung results, p1 and p2 stopped there; epoch 2
    # reached by p3 only, stopped there
    assert "| 1 | 5 | 2 | p1, p2 |" in stopped and "| 2 | 1 | 1 | p3 |" in stopped
    assert "| 1 | p1 | 0.3 | 4 |" in stopped and "| 2 | p3 | 0.5 | 1 |" in stopped
