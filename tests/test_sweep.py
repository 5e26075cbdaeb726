"""kdtune.sweep's driver-side progress line (the rest of the sweep runs through Ray in test_study.py)."""

from __future__ import annotations

from types import SimpleNamespace

from kdtune.config import load_study
from kdtune.sweep import ProgressCallback

REPO_STUDY = "studies/seed000_combinations.yaml"  # a grid of 8


def test_a_grid_sweep_counts_and_times_what_is_left_of_the_grid_not_the_whole_grid(monkeypatch):
    cfg = load_study(REPO_STUDY)
    assert cfg.search.n_trials == 8
    clock = iter([0.0, 10.0, 20.0, 30.0])  # the callback's start, then one trial ending every 10 s
    monkeypatch.setattr("kdtune.sweep._callbacks.time.monotonic", lambda: next(clock))
    lines: list[str] = []
    progress = ProgressCallback(cfg, lines.append, total=3)  # 5 of the 8 were stored by an earlier sweep
    for i in range(3):
        trial = SimpleNamespace(trial_id=f"t{i}", last_result={"val/acc": 0.5 + i / 10})
        progress.on_trial_complete(0, [], trial)
    assert [line.split(" ", 1)[0] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert lines[0].endswith("(elapsed 10s, eta 20s)")  # two trials left at 10 s each, not seven
    assert lines[-1].endswith("(elapsed 30s, eta 0s)") and "best val/acc 0.7" in lines[-1]
