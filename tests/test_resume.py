"""Studies accumulate across runs, resume after the driver is killed, and rebuild their report from storage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from kdtune.config import load_study
from kdtune.study import rebuild_report, run_study

pytestmark = pytest.mark.slow

STUDY = {
    "name": "acc",
    "seed": 0,
    "dataset": {"name": "mnist_5k", "n_train": 400, "n_val": 100, "n_test": 100},
    "teacher": {"model": {"name": "mlp", "hidden": [32]}, "epochs": 1},
    "student": {"model": {"name": "mlp", "hidden": [8]}, "epochs": 1},
    "evaluation": {
        "eps": [0.1], "pgd_steps": 2, "fgsm": False, "n_jacobian": 16,
        "latency": {"batch_sizes": [1], "warmup": 2, "repeats": 2, "n_calls": 2},
    },
    "search": {
        "space": {"method.temperature": {"type": "float", "low": 1.0, "high": 8.0}},
        "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "latency/ms_b1", "mode": "min"}],
        "sampler": {"name": "tpe", "n_startup_trials": 2},
        "budget": 2,
        "max_concurrent": 1,
    },
}


def write(tmp_path: Path, **changes) -> Path:
    raw = {**yaml.safe_load(yaml.safe_dump(STUDY)), **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def completed_while_running(workdir: Path) -> dict[str, list[float]]:
    """{trial id: objective values} of recorded COMPLETE trials, read without touching the schema
    (opening it through Optuna would race the driver creating its tables)."""
    db = workdir / ".kdtune" / "optuna.db"
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        rows = con.execute(
            "SELECT a.trial_id, a.value_json FROM trial_user_attributes a JOIN trials t ON t.trial_id = a.trial_id "
            "WHERE a.key = 'kdtune.record' AND t.state = 'COMPLETE'"
        ).fetchall()
        values = {}
        for row_id, record in rows:
            objective = con.execute(
                "SELECT value FROM trial_values WHERE trial_id = ? ORDER BY objective", (row_id,)
            ).fetchall()
            values[json.loads(record)["trial_id"]] = [v for (v,) in objective]
    return values


def optuna_trials(workdir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{workdir / '.kdtune' / 'optuna.db'}")
    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from kdtune.sweep import init_ray

    init_ray(None)
    yield
    ray.shutdown()


def test_running_a_study_again_adds_its_budget_informed_by_what_is_stored(tmp_path, ray_session, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_study(write(tmp_path))
    first = run_study(cfg, workdir=tmp_path, echo=lambda line: None)
    second = run_study(cfg, workdir=tmp_path, echo=lambda line: None)
    assert (first.run_name, second.run_name) == ("sweep-001", "sweep-002")
    ids = [r.trial_id for r in second.records]
    assert len(ids) == 4 and len(set(ids)) == 4 and set(ids[:2]) == {r.trial_id for r in first.records}
    trials = pd.read_csv(tmp_path / "reports" / "acc" / "trials.csv", dtype={"trial_id": str})
    assert trials["trial_id"].tolist() == ids  # the report covers every trial so far
    assert [t.state.name for t in optuna_trials(tmp_path, "acc")] == ["COMPLETE"] * 4  # one Optuna study

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("acc").experiment_id])
    assert sorted(r.info.run_name for r in runs if "trial_id" not in r.data.tags) == ["sweep-001", "sweep-002"]
    assert sorted(r.data.tags["trial_id"] for r in runs if "trial_id" in r.data.tags) == sorted(ids)


def test_report_is_rebuilt_from_storage_without_training(tmp_path, ray_session, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_study(write(tmp_path, name="rebuild"))
    outcome = run_study(cfg, workdir=tmp_path, echo=lambda line: None)
    report_dir = tmp_path / "reports" / "rebuild"
    shutil.rmtree(report_dir)  # its files and folders (onnx/)

    import kdtune.train

    def no_training(*args, **kwargs):
        raise AssertionError("kdtune report must not train")

    monkeypatch.setattr(kdtune.train, "fit", no_training)
    rebuilt = rebuild_report(cfg, workdir=tmp_path, echo=lambda line: None)
    assert [r.trial_id for r in rebuilt.records] == [r.trial_id for r in outcome.records]
    for r_old, r_new in zip(outcome.records, rebuilt.records):
        assert r_new.metrics["val/acc"] == r_old.metrics["val/acc"]
    assert (report_dir / "trials.csv").exists() and (report_dir / "report.html").exists()


def _study_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            env = proc.info["environ"] or {}
            if env.get("KDTUNE_TEST_MARKER") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def start_driver(workdir: Path, study: Path, tag: str) -> tuple[str, list[str], dict[str, str], subprocess.Popen]:
    """``python -m kdtune STUDY`` in ``workdir``, in a session of its own, its Ray processes marked so that
    ``_study_processes(marker)`` finds them: (marker, command, environment, the driver)."""
    marker = f"{tag}-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "KDTUNE_TEST_MARKER": marker, "KDTUNE_CACHE_DIR": str(workdir / "cache"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "kdtune", str(study)]
    driver = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    return marker, cmd, env, driver


@pytest.mark.parametrize("how", ["kill -9", "ctrl-c"])
def test_a_driver_stopped_mid_sweep_resumes_without_losing_or_repeating_trials(tmp_path, how):
    budget = 6  # with trials of ~2 s, some are still to run when the driver is stopped after 2 finished
    study = write(tmp_path, name="killed", student={"model": {"name": "mlp", "hidden": [8]}, "epochs": 60},
                  search={**STUDY["search"], "budget": budget, "max_concurrent": 2})
    marker, cmd, env, driver = start_driver(tmp_path, study, "kill")
    deadline, done_before = time.monotonic() + 240, {}
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
        try:
            done_before = completed_while_running(tmp_path)
        except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
            continue
        if len(done_before) >= 2:
            break
    assert driver.poll() is None, driver.stdout.read()  # still running: we kill it mid-sweep
    if how == "kill -9":
        for proc in _study_processes(marker):  # the driver and every Ray process it started
            proc.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    else:
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=120)
        assert driver.returncode == 130, out
        assert out.strip().splitlines()[-1].startswith("kdtune: error: interrupted: "), out
        assert "run the same command again to resume" in out
    assert 2 <= len(done_before) < budget

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    for proc in _study_processes(marker):
        proc.send_signal(signal.SIGKILL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming the interrupted sweep-001" in again.stdout
    took_over = f"study 'killed': took over the lock of a driver that is gone (host {socket.gethostname()}, pid "
    assert (took_over in again.stdout) == (how == "kill -9"), again.stdout  # Ctrl-C released it
    assert "write(s) failed" not in again.stdout, again.stdout  # MLflow took every write, the settling ones too

    trials = pd.read_csv(tmp_path / "reports" / "killed" / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == budget and trials["trial_id"].is_unique
    assert (trials["status"] == "COMPLETE").all(), trials[["trial_id", "status", "error"]].to_string()
    final = {t.user_attrs["kdtune.record"]["trial_id"]: t.values for t in optuna_trials(tmp_path, "killed")
             if "kdtune.record" in t.user_attrs}
    assert {k: final[k] for k in done_before} == done_before  # finished trials kept, with their results
    assert "RUNNING" not in {t.state.name for t in optuna_trials(tmp_path, "killed")}  # no orphan left pending

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    children = [r for r in runs if "trial_id" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trials["trial_id"])  # one run per trial
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs) and not [r for r in runs if r.info.status == "RUNNING"]
    for r in children:  # a trial finished before the kill was not run again: no epoch of it logged twice
        if r.data.tags["trial_id"] in done_before:  # (queued per-epoch writes a kill -9 lost stay lost; the run is
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]  # settled, not re-run)
            assert len(steps) == len(set(steps)) and set(steps) <= set(range(1, 61)), steps
            assert r.info.status == "FINISHED" and r.data.metrics.get("val/acc") is not None
            if how == "ctrl-c":  # Ctrl-C lets the driver flush its queue: every epoch is there
                assert sorted(steps) == list(range(1, 61)), steps
    assert len([r for r in runs if "trial_id" not in r.data.tags]) == 1  # the resumed sweep kept its parent run


def test_an_unwritable_report_directory_fails_clearly_and_loses_nothing(tmp_path, ray_session, monkeypatch):
    from kdtune.errors import KdtuneError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_study(write(tmp_path, name="nowhere"))
    (tmp_path / "reports").write_text("a file where the report directory should be")
    with pytest.raises(KdtuneError) as err:
        run_study(cfg, workdir=tmp_path, echo=lambda line: None)
    message = str(err.value)
    assert "cannot write the report" in message and "kdtune report" in message and "\n" not in message
    (tmp_path / "reports").unlink()
    rebuilt = rebuild_report(cfg, workdir=tmp_path, echo=lambda line: None)
    assert [r.status for r in rebuilt.records] == ["COMPLETE", "COMPLETE"]  # the sweep's results were kept
    assert (tmp_path / "reports" / "nowhere" / "trials.csv").exists()


def test_rerun_retrains_a_stored_trial_and_reproduces_its_metrics(tmp_path, ray_session, monkeypatch):
    from kdtune.study import rerun_trial

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_study(write(tmp_path, name="again"))
    outcome = run_study(cfg, workdir=tmp_path, echo=lambda line: None)
    trial = outcome.records[1]
    stored, again = rerun_trial(cfg, trial.trial_id, workdir=tmp_path, echo=lambda line: None)
    for name in ("val/acc", "test/acc", "val/robust_acc@0.1", "model/params"):
        assert again[name] == pytest.approx(stored[name], abs=1e-9), name  # seeded: the same student
    assert again["latency/ms_b1"] > 0
    from kdtune.errors import KdtuneError

    with pytest.raises(KdtuneError, match="no trial 'nope'"):
        rerun_trial(cfg, "nope", workdir=tmp_path, echo=lambda line: None)


def test_seed_summary_is_the_t_interval():
    from kdtune.metrics import seed_summary

    runs = [{"val/acc": 0.90, "x": 1.0}, {"val/acc": 0.92, "x": 2.0}, {"val/acc": 0.94}]
    out = seed_summary(runs)
    assert set(out) == {"val/acc/mean", "val/acc/ci95"}  # only metrics every run has
    assert out["val/acc/mean"] == pytest.approx(0.92)
    assert out["val/acc/ci95"] == pytest.approx(4.302652729911275 * 0.02 / 3**0.5)  # t(0.975, 2) * sd / sqrt(n)


def test_front_members_are_repeated_over_seeds(tmp_path, ray_session, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    evaluation = {**STUDY["evaluation"], "seeds": 3, "ablation": True}
    cfg = load_study(write(tmp_path, name="seeds", evaluation=evaluation))
    outcome = run_study(cfg, workdir=tmp_path, echo=lambda line: None)
    # the ablation: the suggested pick against its ce twin over the same three seeds, both arms stored
    study = optuna.load_study(study_name="seeds", storage=f"sqlite:///{tmp_path / '.kdtune' / 'optuna.db'}")
    plain = {k: v for k, v in study.user_attrs.items() if k.startswith("kdtune.runs.plain.")}
    assert len(plain) == 1, plain
    (key, plain_runs), = plain.items()
    pick = key.removeprefix("kdtune.runs.plain.")
    distilled = study.user_attrs[f"kdtune.runs.seeds.{pick}"]
    assert len(plain_runs) == len(distilled) == 3
    assert distilled[0]["val/acc"] == next(r for r in outcome.records if r.trial_id == pick).metrics["val/acc"]
    diffs = [d["val/acc"] - p["val/acc"] for d, p in zip(distilled, plain_runs)]
    md = (tmp_path / "reports" / "seeds" / "report.md").read_text(encoding="utf-8")
    section = md.split("## Did distillation pay?", 1)[1].split("\n## ", 1)[0]
    assert f"| {pick} | val/acc | 3 |" in section
    row = next(line for line in section.splitlines() if line.startswith(f"| {pick} | val/acc |"))
    assert f"{sum(diffs) / 3:.4g} ± " in row.split("|")[6], (row, diffs)
    repeated = [r for r in outcome.records if "seeds/n" in r.metrics]
    assert repeated, "no front member was repeated"
    for r in repeated:
        assert r.metrics["seeds/n"] == 3 and r.metrics["val/acc/ci95"] >= 0
        assert 0 <= r.metrics["val/acc/mean"] <= 1
    done = {("plain", pick)} | {("seeds", r.trial_id) for r in repeated}  # each arm stored for these
    retrained: list[tuple[str, str]] = []
    from kdtune.study._retrain import retrain

    def counted(run, record, **kwargs):
        retrained.append(("plain" if kwargs.get("params") is not None else "seeds", record.trial_id))
        return retrain(run, record, **kwargs)

    monkeypatch.setattr("kdtune.study.stages.ablation.retrain", counted)
    monkeypatch.setattr("kdtune.study._retrain.retrain", counted)  # the seed repeats'
    rebuilt = rebuild_report(cfg, workdir=tmp_path, echo=lambda line: None)  # stored: not retrained
    assert not done & set(retrained), retrained
    # (re-measured latency may put another trial on the front, or make another the pick: that one is repeated,
    # or ablated, then; a member repeated before and picked now reuses its stored seed runs)
    again = {r.trial_id: r.metrics.get("val/acc/mean") for r in rebuilt.records}
    assert {r.trial_id: again[r.trial_id] for r in repeated} == {r.trial_id: r.metrics["val/acc/mean"] for r in repeated}


def test_a_sweep_whose_searcher_state_a_kill_tore_is_not_resumed(tmp_path):
    from kdtune.sweep import can_resume

    sweep = tmp_path / "sweep-001"
    sweep.mkdir()
    (sweep / "tuner.pkl").write_bytes(b"saved")  # what Tune's can_restore looks for
    (sweep / "searcher-state-2026-12-04_01-58-13.pkl").write_bytes(b"state")
    assert can_resume(tmp_path, "sweep-001")
    (sweep / "searcher-state-2026-12-04_01-58-13.pkl").write_bytes(b"")  # cut to nothing by a kill -9
    assert not can_resume(tmp_path, "sweep-001")
