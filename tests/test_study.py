"""End to end through Ray Tune, Optuna and MLflow on a tiny study (a few trials, one epoch)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from kdtune.config import load_study
from kdtune.data import load_dataset
from kdtune.metrics import trial_metric_names as metric_names
from kdtune.records import Provenance
from kdtune.study import SweepPace, run_study

pytestmark = pytest.mark.slow

BASE = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"name": "mnist_5k", "n_train": 400, "n_val": 100, "n_test": 100},
    # a teacher clearly slower than every student at batch 1, so the hypervolume (latency relative to the
    # teacher's) is positive whatever the timing noise of a few calls
    "teacher": {"model": {"name": "mlp", "hidden": [256]}, "epochs": 2},
    "student": {"model": {"name": "mlp", "hidden": [16]}, "epochs": 2, "lr": 5.0e-3},
    "method": {"name": "hinton", "temperature": 4.0, "alpha": 0.5},
    "penalties": {"jacobian": {"weight": 1.0e-3}},
    "adversary": {"enabled": True, "attack": {"name": "fgsm", "eps": 0.1}},
    "evaluation": {
        "eps": [0.1, 0.2],
        "pgd_steps": 3,
        "n_jacobian": 32,
        "latency": {"batch_sizes": [1, 16], "warmup": 5, "repeats": 2, "n_calls": 3},
    },
    "search": {
        "space": {
            "method.temperature": {"type": "float", "low": 1.0, "high": 8.0, "log": True},
            "student.model.hidden.0": {"type": "int", "low": 4, "high": 32},
        },
        "objectives": [
            {"metric": "val/acc", "mode": "max"},
            {"metric": "val/robust_acc@0.1", "mode": "max"},
            {"metric": "latency/ms_b1", "mode": "min"},
        ],
        "sampler": {"name": "tpe", "n_startup_trials": 2},
        "budget": 4,
        "max_concurrent": 2,
    },
    "report": {  # names with '@' must survive MLflow's key rules
        "reference": {
            "source": "a made-up source",
            "rows": [{"label": "teacher", "teacher": True, "metrics": {"test/robust_acc@0.1": 0.5}}],
        }
    },
}


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from kdtune.sweep import init_ray

    init_ray(None)
    yield
    ray.shutdown()


def write_study(tmp_path, **changes):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        raw[key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_study(path)


def dominated(row, others, modes, spread=None, other_spreads=None):
    """Whether another row beats ``row``: no worse anywhere, better somewhere; with spreads, two values within
    the larger of their spreads are a tie (the report's noise-aware dominance)."""
    signs = np.array([1 if m == "max" else -1 for m in modes])
    r = row * signs
    spread = np.zeros(len(row)) if spread is None else spread
    for k, o in enumerate(others):
        margin = np.maximum(spread, np.zeros(len(row)) if other_spreads is None else other_spreads[k])
        gain = o * signs - r
        if np.all(gain >= -margin) and np.any(gain > margin):
            return True
    return False


def mlflow_runs(workdir, experiment):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_tiny_study_end_to_end(tmp_path, ray_session, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = [{"student.model.hidden.0": 31}, {"student.model.hidden.0": 5, "method.temperature": 2.0}]
    cfg = write_study(tmp_path, search={**BASE["search"], "enqueue": first})
    lines = []
    outcome = run_study(cfg, workdir=tmp_path, echo=lines.append)

    # every trial finished and is reported once, with one progress line each
    assert [r.status for r in outcome.records] == ["COMPLETE"] * 4
    # the enqueued trials ran first, with the values they fix; the sampler drew the rest
    assert [{k: r.params[k] for k in point} for r, point in zip(outcome.records, first)] == first
    assert 1.0 <= outcome.records[0].params["method.temperature"] <= 8.0
    assert all(r.provenance == Provenance("hinton", "training split", "training images") for r in outcome.records)
    assert len({r.trial_id for r in outcome.records}) == 4
    assert sum("done" in line for line in lines) == 4
    # the sweep's pace: every trial that ended in it, over its wall time (part of the study's)
    pace = outcome.pace
    assert pace.trials == 4 and pace.per_trial == "1 CPU" and pace.at_once == cfg.search.max_concurrent
    assert 0 < pace.seconds and pace.per_hour == pytest.approx(4 * 3600 / pace.seconds)
    assert "CPU(s)" in pace.cluster

    out = tmp_path / "reports" / "tiny"
    for name in ("trials.csv", "pareto.csv", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    assert list(out.glob("front_*.png"))
    trials = pd.read_csv(out / "trials.csv", dtype={"trial_id": str})
    expected = ["trial_id", "status", "epochs", "sweep_s", *cfg.search.space, *metric_names(cfg.evaluation), "error",
                "feasible", "pareto"]
    assert list(trials.columns) == expected
    assert len(trials) == 4
    # each trial finished inside the sweep, on its clock (which starts just before the sweep's pace does)
    assert ((trials["sweep_s"] > 0) & (trials["sweep_s"] <= pace.seconds + 5)).all(), trials["sweep_s"]

    # metrics obey their invariants
    for _, row in trials.iterrows():
        for eps in ("0.1", "0.2"):
            assert row[f"val/robust_acc@{eps}"] <= row["val/acc"]
            assert row[f"test/robust_acc@{eps}"] <= row["test/acc"]
        assert row["latency/ms_b1"] > 0 and row["jacobian/norm"] >= 0  # a dead-ReLU student has J = 0
        assert row["latency/spread_ms_b1"] >= 0 and 0 <= row["model/onnx_max_abs_diff"] <= 1e-3  # the default runtime
        hidden = int(row["student.model.hidden.0"])
        assert row["model/params"] == 784 * hidden + hidden + hidden * 10 + 10

    # feasible: val/acc above the share of the validation split's most frequent label (counted here)
    params = {k: v for k, v in BASE["dataset"].items() if k != "name"}
    labels = load_dataset(BASE["dataset"]["name"], params).val.y.tolist()
    rate = max(Counter(labels).values()) / len(labels)
    feasible = (trials["val/acc"] > rate).tolist()
    assert trials["feasible"].tolist() == feasible
    assert f"val/acc must exceed {rate:.4g}" in (out / "report.md").read_text(encoding="utf-8")
    # the front is exactly the non-dominated set of the feasible trials (checked independently here)
    objs = [o.metric for o in cfg.search.objectives]
    modes = [o.mode for o in cfg.search.objectives]
    values = trials[objs].to_numpy(float)[feasible]
    spreads = np.array([[row.get(o.replace("latency/ms_", "latency/spread_ms_"), 0.0) if o.startswith("latency/")
                         else 0.0 for o in objs] for _, row in trials.iterrows()])[feasible]  # latencies' spreads
    members = iter([not dominated(values[i], np.delete(values, i, 0), modes, spreads[i], np.delete(spreads, i, 0))
                    for i in range(len(values))])
    independent = [next(members) if ok else False for ok in feasible]
    assert trials["pareto"].tolist() == independent
    assert len(pd.read_csv(out / "pareto.csv")) == sum(independent)
    assert 0 < outcome.hypervolume <= 1
    assert "## Against the source" in (out / "report.md").read_text(encoding="utf-8")
    # the front's ONNX files (and the teacher's), as timed, linked from the front table
    front_ids = set(trials.loc[trials["pareto"], "trial_id"])
    assert {p.stem for p in (out / "onnx").glob("*.onnx")} == front_ids | {"teacher"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert all(f"[onnx/{t}.onnx](onnx/{t}.onnx)" in md for t in front_ids) and "in ONNX Runtime" in md
    assert {"latency/ms_b1", "latency/spread_ms_b1", "model/onnx_max_abs_diff"} <= set(outcome.teacher_metrics)
    assert pace.text() in (out / "report.md").read_text(encoding="utf-8")

    # MLflow: one parent, one child per trial, all ended, per-epoch metrics, weights, report artifacts
    client, runs = mlflow_runs(tmp_path, "tiny")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["trial_id"] for r in children} == set(trials["trial_id"])
    for child in children:
        assert "method.temperature" in child.data.params
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert [m.step for m in history] == [1, 2]
        assert "val/robust_acc_at_0.1" in child.data.metrics
        assert child.data.tags["pareto"] in ("true", "false")
        assert child.data.tags["provenance.transfer_set"] == "training split"
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
        assert "student.pt" in artifacts
        assert "latency/spread_ms_b1" in child.data.metrics
        assert ("onnx" in artifacts) == (child.data.tags["pareto"] == "true")  # the front's ONNX models
        if child.data.tags["pareto"] == "true":  # front members: a loadable model with an input signature
            import mlflow.pytorch
            from mlflow.models import get_model_info

            uri = f"runs:/{child.info.run_id}/student"
            # the environment, not mlflow.set_tracking_uri: that also sets $MLFLOW_TRACKING_URI for the rest of the
            # session, and a later study in the same process would write into this test's store
            monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
            info = get_model_info(uri)
            assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 28, 28]
            model = mlflow.pytorch.load_model(uri)
            import torch

            assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    report_files = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/trials.csv", "report/report.html"} <= report_files

    # Tune's own records: each trial's result.json (its JSON logger); no CSV or TensorBoard copies of MLflow
    ray_dir = tmp_path / ".kdtune" / "ray" / "tiny"
    assert len(list(ray_dir.rglob("result.json"))) == 4
    assert not list(ray_dir.rglob("progress.csv")) and not list(ray_dir.rglob("events.out.tfevents*"))
    assert parents[0].data.metrics["pareto/hypervolume"] == pytest.approx(outcome.hypervolume)
    assert parents[0].data.metrics["sweep/trials"] == 4
    assert parents[0].data.metrics["sweep/trials_per_hour"] == pytest.approx(pace.per_hour)


def test_a_diverging_trial_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, ray_session, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    search = yaml.safe_load(yaml.safe_dump(BASE["search"]))
    search["space"] = {"student.lr": {"type": "categorical", "choices": [5.0e-3, 1.0e30]}}
    search["sampler"] = {"name": "grid"}
    search.pop("budget")
    student = {**BASE["student"], "optimizer": "sgd"}
    cfg = write_study(tmp_path, name="diverge", search=search, student=student)
    outcome = run_study(cfg, workdir=tmp_path, echo=lambda line: None)

    by_lr = {r.params["student.lr"]: r for r in outcome.records}
    assert set(by_lr) == {5.0e-3, 1.0e30}
    assert by_lr[5.0e-3].status == "COMPLETE"
    failed = by_lr[1.0e30]
    assert failed.status == "FAILED" and "non-finite" in failed.error and "\n" not in failed.error

    trials = pd.read_csv(tmp_path / "reports" / "diverge" / "trials.csv", dtype={"trial_id": str})
    row = trials.set_index("trial_id").loc[failed.trial_id]
    assert row["status"] == "FAILED" and not row["pareto"] and "non-finite" in row["error"]

    _, runs = mlflow_runs(tmp_path, "diverge")
    status = {r.data.tags.get("trial_id"): r.info.status for r in runs if "trial_id" in r.data.tags}
    assert status == {failed.trial_id: "FAILED", by_lr[5.0e-3].trial_id: "FINISHED"}
    assert not any(r.info.status == "RUNNING" for r in runs)


def test_driver_work_alongside_the_sweep_uses_one_thread_and_restores_the_count():
    import torch

    from kdtune.priority import alongside as _alongside

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _alongside(torch.get_num_threads) as pending:
            inside = torch.get_num_threads()
        assert pending.result() == 1 and inside == 1  # the trials keep the other cores
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_an_mlflow_store_that_cannot_be_opened_fails_before_any_trial(tmp_path, ray_session, monkeypatch):
    from kdtune.errors import KdtuneError

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the store's directory should be")
    cfg = write_study(tmp_path, name="nostore", tracking={"uri": f"sqlite:///{blocker / 'mlflow.db'}"})
    with pytest.raises(KdtuneError, match="cannot open the MLflow store") as info:
        run_study(cfg, workdir=tmp_path, echo=lambda line: None)
    assert "\n" not in str(info.value)
    assert not (tmp_path / ".kdtune" / "ray" / "nostore").exists()  # no sweep was started


def test_tunes_benign_sync_race_is_dropped_and_any_other_failed_sync_still_warns():
    import logging
    import sys

    from ray.train._internal import syncer
    from ray.tune.execution import experiment_state

    from kdtune.compat import BenignSyncRace, setup

    setup()  # installs it on Tune's two loggers (the CLI calls it; importing kdtune changes nothing)

    assert any(isinstance(f, BenignSyncRace) for f in syncer.logger.filters)
    assert any(isinstance(f, BenignSyncRace) for f in experiment_state.logger.filters)
    head = "Last sync command failed with the following error:\nTraceback (most recent call last):\n  ...\n"
    temporary = ("Failed to open local file '/tmp/ray/session_1/artifacts/t/sweep-001/driver_artifacts/"
                 ".4a83858f-3061-tmp-searcher-state-t.pkl'. Detail: [errno 2] No such file or directory")
    race = head + "FileNotFoundError: [Errno 2] " + temporary
    gone = head + "FileNotFoundError: [Errno 2] Failed to open local file '/data/sweep-001/experiment_state-t.json'"
    denied = head + "PermissionError: [Errno 13] Permission denied: '/data/sweep-001/.1-tmp-searcher-state-t.pkl'"

    def kept(message, error=None, logger=syncer.logger):
        exc_info = None
        if error is not None:
            try:
                raise error
            except OSError:
                exc_info = sys.exc_info()
        return BenignSyncRace().filter(logging.LogRecord(logger.name, logging.WARNING, __file__, 1, message,
                                                         None, exc_info))

    assert not kept(race)
    assert kept(gone) and kept(denied) and kept("Saving the experiment state took ~12.00 seconds")
    # A forced snapshot (the sweep's last) logs the failed copy it waited for as an error, the exception attached.
    forced = "Saving experiment state to storage at '/data/sweep-001' failed with exception: "
    state = experiment_state.logger
    assert not kept(forced, FileNotFoundError(2, temporary), state)
    assert kept(forced, FileNotFoundError(2, "Failed to open local file '/data/sweep-001/experiment_state-t.json'"),
                state)
    assert kept(forced, PermissionError(13, "Permission denied: '/data/.1-tmp-searcher-state-t.pkl'"), state)
    assert kept(forced, None, state)
    # "-tmp-" elsewhere in the path (a user's folder) is not one of Tune's temporaries.
    elsewhere = "Failed to open local file '/data/run-tmp-1/sweep-001/experiment_state-t.json'"
    assert kept(head + "FileNotFoundError: [Errno 2] " + elsewhere)
    assert kept(forced, FileNotFoundError(2, elsewhere), state)


def test_sweep_pace_is_trials_over_wall_time_with_what_each_trial_had():
    pace = SweepPace(trials=12, seconds=90.0, per_trial="2 CPU + 0.25 GPU", at_once=4,
                     cluster="1 node(s), 16 CPU(s), 1 GPU(s)")
    assert pace.per_hour == 480.0  # 12 trials in 1.5 minutes
    assert pace.text() == ("12 trials ended in 90.0 s of sweep: 480 trials/hour (2 CPU + 0.25 GPU per trial, up to 4 "
                           "at once; Ray: 1 node(s), 16 CPU(s), 1 GPU(s))")
    assert SweepPace(0, 0.0, "1 CPU", 1, "").per_hour == 0.0  # a sweep that ended before it began
    assert SweepPace(1, 36.0, "1 CPU", 1, "1 node(s), 2 CPU(s), 0 GPU(s)").text().startswith(
        "1 trial ended in 36.0 s of sweep: 100 trials/hour")


def test_only_a_final_report_or_a_failure_ends_a_trial():
    from kdtune.sweep import final_report as _final_report
    from kdtune.sweep import FAILED_KEY

    epoch = {"epoch": 3, "train/loss": 0.4, "val/acc": 0.9}  # has an objective, but is not the end
    assert not _final_report(epoch) and not _final_report({})
    assert _final_report({"val/acc": 0.9, "provenance/method": "hinton"})  # Tune flattens the provenance
    assert _final_report({"val/acc": 0.9, "provenance": {"method": "hinton"}})
    assert _final_report({FAILED_KEY: "loss became non-finite"})
