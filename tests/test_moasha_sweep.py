"""MO-ASHA end to end through Ray, Optuna and MLflow, in one sweep killed with -9 mid-way and resumed (one run of
the CLI each, to keep the suite's time): the resumed sweep goes on ranking against the rung results stored before
the kill, and trials stopped at a rung are PRUNED everywhere (Optuna, the study's record, trials.csv, MLflow, the
report) and never on the front."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from kdtune import store
from kdtune.tracking import PRUNED_TAG
from tests.test_resume import _study_processes, optuna_trials, start_driver, write

pytestmark = pytest.mark.slow

OBJECTIVES = [{"metric": "val/acc", "mode": "max"}, {"metric": "val/robust_acc@0.1", "mode": "max"},
              {"metric": "model/params", "mode": "min"}]
SEARCH = {
    "space": {"student.model.hidden.0": {"type": "int", "low": 2, "high": 64, "log": True},
              "student.lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True}},
    "objectives": OBJECTIVES,
    "sampler": {"name": "random"},
    "scheduler": {"name": "moasha", "min_epochs": 1, "reduction_factor": 2, "rung_pgd_steps": 2, "rung_subset": 64},
    "budget": 6,
    "max_concurrent": 2,
}


def moasha_study(tmp_path: Path, name: str, epochs: int = 4) -> Path:
    return write(tmp_path, name=name, student={"model": {"name": "mlp", "hidden": [8]}, "epochs": epochs},
                 search=SEARCH)


def _ended_while_running(workdir: Path) -> int:
    """How many trials the driver has recorded (complete or pruned), read without touching the schema."""
    db = workdir / ".kdtune" / "optuna.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM trial_user_attributes WHERE key = 'kdtune.record'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return 0


def test_a_killed_moasha_sweep_resumes_and_ranks_against_the_rungs_stored_before(tmp_path):
    study = moasha_study(tmp_path, "mokill", epochs=12)  # rungs at 1, 2, 4, 8
    marker, cmd, env, driver = start_driver(tmp_path, study, "moasha")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None and _ended_while_running(tmp_path) < 2:
        time.sleep(0.5)
    assert driver.poll() is None, driver.stdout.read()  # still running: killed mid-sweep
    for proc in _study_processes(marker):  # the driver and every Ray process it started
        proc.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    url = f"sqlite:///{tmp_path / '.kdtune' / 'optuna.db'}"
    before = store.read_rungs(optuna.load_study(study_name="mokill", storage=url))
    ended_before = {r.trial_id for r in store.read_records(optuna.load_study(study_name="mokill", storage=url), tmp_path)}
    assert before and _ended_while_running(tmp_path) < 6

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False)
    for proc in _study_processes(marker):
        proc.send_signal(signal.SIGKILL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming the interrupted sweep-001" in again.stdout
    trials = pd.read_csv(tmp_path / "reports" / "mokill" / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"COMPLETE", "PRUNED"}, trials[["trial_id", "status", "error"]].to_string()
    assert (trials["status"] == "PRUNED").any()
    # (an Optuna trial asked just before the kill, after the searcher's last saved state, has no record: the
    # resumed sweep fails it once it ends, so nothing stays RUNNING)
    every = optuna_trials(tmp_path, "mokill")
    states = [t.state.name for t in every if "kdtune.record" in t.user_attrs]
    assert sorted(states) == sorted(trials["status"]) and "RUNNING" not in {t.state.name for t in every}
    after = store.read_rungs(optuna.load_study(study_name="mokill", storage=url))
    for trial_id, by_epoch in before.items():  # kept across the kill: the resumed sweep ranked against them
        assert {e: after[trial_id][e] for e in by_epoch} == by_epoch
    assert set(after) == set(trials["trial_id"])
    check_pruned_everywhere(tmp_path, "mokill", epochs=12, ended_before_kill=ended_before)


def check_pruned_everywhere(workdir: Path, name: str, *, epochs: int, ended_before_kill: set[str]) -> None:
    """Trials stopped at a rung are PRUNED in Optuna, the study's record, trials.csv, MLflow and the report, with
    no truncated metrics, and never on the front; a trial with the best accuracy at a rung was not stopped there.
    (MLflow writes still queued when the driver was killed are lost: the rung metrics of a trial that ended
    before the kill may be missing there; its run is settled KILLED with its tag all the same.)"""
    url = f"sqlite:///{workdir / '.kdtune' / 'optuna.db'}"
    records = store.read_records(optuna.load_study(study_name=name, storage=url), workdir)
    pruned = {r.trial_id: r.epochs for r in records if r.status == "PRUNED"}
    complete = {r.trial_id for r in records if r.status == "COMPLETE"}
    assert pruned and complete and len(pruned) + len(complete) == len(records)
    rungs = {r.trial_id: r.rungs for r in records}
    for r in records:  # every trial's cheap objectives at each rung it reached, from the Ray workers
        assert 1 in r.rungs and set(r.rungs[1]) == {o["metric"] for o in OBJECTIVES}, r
        assert (r.epochs == epochs) if r.status == "COMPLETE" else (max(r.rungs) == r.epochs), r
        assert not (r.status == "PRUNED" and r.metrics)  # no truncated metrics kept
    for epoch in {e for by_epoch in rungs.values() for e in by_epoch}:  # the best accuracy ranks first at a rung
        at = {t: by_epoch[epoch]["val/acc"] for t, by_epoch in rungs.items() if epoch in by_epoch}
        best = max(at.values())
        if list(at.values()).count(best) == 1:
            assert pruned.get(max(at, key=at.get)) != epoch, (epoch, at, pruned)
    states = {t.user_attrs["kdtune.record"]["trial_id"]: t for t in optuna_trials(workdir, name)
              if "kdtune.record" in t.user_attrs}
    assert {k: t.state.name for k, t in states.items()} == {
        **{k: "PRUNED" for k in pruned}, **{k: "COMPLETE" for k in complete}}
    assert all(states[k].values is None for k in pruned)  # never told truncated objective values

    report = workdir / "reports" / name
    trials = pd.read_csv(report / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")
    assert trials.loc[list(pruned), "epochs"].tolist() == list(pruned.values())
    assert trials.loc[list(pruned), "val/acc"].isna().all()
    on_front = set(pd.read_csv(report / "pareto.csv", dtype={"trial_id": str})["trial_id"])
    assert on_front and on_front <= complete
    md = (report / "report.md").read_text(encoding="utf-8")
    assert f"{len(records)} trials: {len(complete)} complete, {len(pruned)} stopped early, 0 failed," in md
    section = md.split("## Stopped early", 1)[1].split("\n## ", 1)[0]
    stopped_at_1 = [t for t, e in pruned.items() if e == 1]
    assert f"| 1 | {len(records)} | {len(stopped_at_1)} |" in section, section  # all reached the first rung
    for trial_id, epoch in pruned.items():
        assert f"| {epoch} | {trial_id} |" in section
    assert "early stopping" in md and "PGD-2 " in md  # the rung protocol among the run's facts

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}
    assert set(children) == set(pruned) | complete
    for trial_id, run in children.items():
        if trial_id in pruned:
            assert run.info.status == "KILLED" and run.data.tags[PRUNED_TAG] == str(pruned[trial_id])
            if trial_id not in ended_before_kill:
                assert "rung/val/robust_acc_at_0.1" in run.data.metrics  # what it was ranked on
        else:
            assert run.info.status == "FINISHED" and PRUNED_TAG not in run.data.tags
