"""``kdtune submit``: a study as a Ray job. Checked against a real local Ray head with its dashboard (the
job API), bound to 127.0.0.1 and started here: two scheduled submissions accumulate in one study under
``--root``. Locations a job cannot keep, and a cluster that cannot be reached, are refused in one line."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pandas as pd
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from kdtune import cli
from tests.test_resume import STUDY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _project(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(yaml.safe_dump(STUDY)), "name": "nightly", **changes}))
    return path


def test_relative_output_locations_are_refused_before_the_cluster_is_contacted(tmp_path, monkeypatch, capsys):
    study = _project(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    code = cli.main(["submit", "study.yaml", "--address", "http://127.0.0.1:1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("kdtune: error: output.reports ('reports'), output.ray ('.kdtune/ray'), output.optuna "
                          "('default .kdtune/optuna.db'), tracking.uri ('default mlflow.db') resolve(s) against the "
                          "job's working directory"), err
    assert "pass --root DIR" in err
    assert cli.main(["submit", str(study), "--address", "http://127.0.0.1:1", "--root", "relative/dir"]) == 2
    assert "--root relative/dir: give an absolute path" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["study.yaml"]  # nothing written


def test_an_unreachable_cluster_is_one_line(tmp_path, monkeypatch, capsys):
    _project(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    code = cli.main(["submit", "study.yaml", "--address", f"http://127.0.0.1:{_free_port()}", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("kdtune: error: cannot reach a Ray dashboard at http://127.0.0.1:"), err


def _stop(temp_dir: str, gcs_port: int) -> None:
    """Stop this head's processes only (``ray stop`` would stop every Ray on the machine): those naming its
    temp dir or GCS port, and their descendants."""
    roots = [p for p in psutil.process_iter(["cmdline"])
             if any(temp_dir in a or a.endswith(f":{gcs_port}") for a in (p.info["cmdline"] or []))]
    procs = set(roots)
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.update(root.children(recursive=True))
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    for proc in psutil.wait_procs(list(procs), timeout=5)[1]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


@pytest.fixture
def ray_head():
    """A Ray head with its dashboard on 127.0.0.1 and a temp dir of its own; only its processes are stopped."""
    if shutil.which("ray") is None:
        pytest.fail("the ray CLI is missing: pip install -e '.[dev]' brings ray[default]")
    temp_dir = tempfile.mkdtemp(prefix="kdray")  # short: Ray's socket paths live under it
    gcs, dashboard = _free_port(), _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run(
        ["ray", "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         # the job agent's port, fixed (52365) by default: another Ray on this machine may hold it
         f"--dashboard-agent-listen-port={_free_port()}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        _stop(temp_dir, gcs)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow  # a Ray head with its dashboard, and two study jobs on it
def test_two_scheduled_submissions_add_to_one_study_under_root(tmp_path, ray_head):
    project, root = tmp_path / "project", tmp_path / "shared"
    _project(project)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "token"}  # the head's token (~/.ray/auth_token)
    env.pop("MLFLOW_TRACKING_URI", None)
    outputs = []
    for _ in range(2):  # two nights
        done = subprocess.run([sys.executable, "-m", "kdtune", "submit", "study.yaml", "--address", ray_head,
                               "--root", str(root), "--wait"], cwd=project, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "submitted study.yaml as Ray job kdtune-nightly-" in done.stdout and "ray job logs --address" in done.stdout
        outputs.append(done.stdout)
    assert "sweep-001: 2 trial(s)" in outputs[0] and "sweep-002: 2 new trial(s) on top of 2 stored" in outputs[1]
    assert "Failed to restore" not in outputs[0] + outputs[1]  # Ray's log lines for a fresh sweep stay out
    study = root / "nightly"
    trials = pd.read_csv(study / "reports" / "nightly" / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 4 and (trials["status"] == "COMPLETE").all() and trials["trial_id"].is_unique
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nightly").experiment_id])
    parents = [r for r in runs if "trial_id" not in r.data.tags]
    children = [r for r in runs if "trial_id" in r.data.tags]
    assert len(parents) == 2 and sorted(r.data.tags["trial_id"] for r in children) == sorted(trials["trial_id"])
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(p.name for p in project.iterdir()) == ["study.yaml"]  # nothing written in the project
