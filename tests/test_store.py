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
