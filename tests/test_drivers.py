"""Drivers that meet: a second driver on a running study refuses, and two different studies started at
once in one folder (sharing mlflow.db, .kdtune/optuna.db and the teacher cache) both finish with every
MLflow run. Real ``python -m kdtune`` processes, each with its own local Ray."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from kdtune.study._lock import DriverLock
from tests.test_resume import write

pytestmark = pytest.mark.slow


def test_a_second_driver_refuses_and_two_studies_in_one_folder_both_finish(tmp_path):
    studies = {}
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        path = write(tmp_path / name, name=name, student={"model": {"name": "mlp", "hidden": [8]}, "epochs": 15})
        studies[name] = path.rename(tmp_path / f"{name}.yaml")
    env = {**os.environ, "KDTUNE_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)

    def kdtune(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "kdtune", str(studies[name])], cwd=tmp_path, env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    first, other = kdtune("one"), kdtune("two")  # at once: both create the stores' schemas
    lock, deadline = DriverLock(f"sqlite:///{tmp_path / '.kdtune' / 'optuna.db'}", "one"), time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        with contextlib.suppress(Exception):  # the store is being created
            if lock.holder() is not None:
                break
        time.sleep(0.2)
    second = kdtune("one")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and out == "", out + err
    assert err.count("\n") == 1 and err.startswith("kdtune: error: study 'one' is being run by another driver (host "), err
    assert f"pid {first.pid}, since " in err

    for driver in (first, other):
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, out + err
        assert "write(s) failed" not in out, out
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("one", "two"):
        trials = pd.read_csv(tmp_path / "reports" / name / "trials.csv", dtype={"trial_id": str})
        assert len(trials) == 2 and (trials["status"] == "COMPLETE").all()  # the budget, nothing duplicated
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        children = sorted(r.data.tags["trial_id"] for r in runs if "trial_id" in r.data.tags)
        assert children == sorted(trials["trial_id"]) and len(runs) == 3  # a parent and one run per trial
        assert all(r.info.status == "FINISHED" for r in runs)
    assert lock.holder() is None  # released
