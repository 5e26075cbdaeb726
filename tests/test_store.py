"""kdtune.store: what the study's Optuna storage keeps beside Optuna's own trials."""

from __future__ import annotations

import optuna

from kdtune import store
from kdtune.records import TrialRecord


def test_trials_left_running_without_a_record_are_failed_and_recorded_ones_are_left_alone(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s", directions=["maximize"])
    recorded = study.ask()
    store.write_record(recorded, TrialRecord("t1", "COMPLETE", {}, {"val/acc": 0.9}))
    study.tell(recorded, [0.9])
    running_recorded = study.ask()  # recorded, its outcome not told yet: not an orphan
    store.write_record(running_recorded, TrialRecord("t2", "COMPLETE", {}, {"val/acc": 0.8}))
    orphan = study.ask()  # asked by a driver killed before it recorded anything
    assert store.fail_orphans(study) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {recorded.number: optuna.trial.TrialState.COMPLETE,
                      running_recorded.number: optuna.trial.TrialState.RUNNING,
                      orphan.number: optuna.trial.TrialState.FAIL}
    assert store.fail_orphans(study) == 0  # nothing left to fail


def test_sweep_spans_open_on_each_start_and_close_when_finished(tmp_path, monkeypatch):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s", directions=["maximize"])
    clock = iter([100.0, 300.0, 350.0, 500.0])
    monkeypatch.setattr(store.time, "time", lambda: next(clock))
    store.set_sweep(study, "sweep-001", "running")  # a driver starts it at 100 and is killed
    store.set_sweep(study, "sweep-001", "running")  # resumed at 300
    store.set_sweep(study, "sweep-001", "finished")  # at 350
    store.set_sweep(study, "sweep-002", "running")  # at 500, still running
    assert store.sweep_spans(study) == [(100.0, None), (300.0, 350.0), (500.0, None)]
    assert [(s["name"], s["status"]) for s in store.sweeps(study)] == [("sweep-001", "finished"),
                                                                      ("sweep-002", "running")]


def test_read_records_give_each_trial_the_seconds_of_sweeping_when_it_finished(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s", directions=["maximize"])
    store.set_sweep(study, "sweep-001", "running")
    for i in range(2):
        trial = study.ask()
        store.write_record(trial, TrialRecord(f"t{i}", "COMPLETE", {}, {"val/acc": 0.9}, epochs=3))
        study.tell(trial, [0.9])
    store.set_sweep(study, "sweep-001", "finished")
    (start, end), = store.sweep_spans(study)
    records = store.read_records(study, tmp_path)
    seconds = [r.sweep_s for r in records]
    assert all(s is not None and 0 <= s <= end - start + 1e-3 for s in seconds)  # Optuna's clock, to the µs
    assert seconds[0] <= seconds[1] and [r.epochs for r in records] == [3, 3]


def test_enqueued_trials_are_asked_first_and_queued_once_per_study(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s", directions=["maximize"])
    points = [{"m": "b"}, {"m": "a", "x": 0.5}]
    store.enqueue(study, points)
    store.enqueue(study, points)  # a later run of the study: nothing queued twice
    asked = []
    for _ in range(3):
        trial = study.ask()
        asked.append((trial.suggest_categorical("m", ["a", "b"]), trial.suggest_float("x", 0.0, 1.0)))
        study.tell(trial, [0.0])
    assert asked[:2] == [("b", asked[0][1]), ("a", 0.5)] and len(study.trials) == 3
    store.enqueue(study, points)  # they ran: still nothing queued again
    assert len(study.trials) == 3
