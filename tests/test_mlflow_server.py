"""A real MLflow server on 127.0.0.1 shows a study's runs through its REST API, as the UI would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from kdtune.config import load_study
from kdtune.study import run_study
from tests.test_study import BASE  # the tiny end-to-end study

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, path: str, body: dict) -> dict:
    """POST ``body`` to the REST endpoint ``path`` (GET with query parameters for the read-only ones)."""
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}"
    if path.startswith("experiments/get"):
        request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(body)}", method="GET")
    else:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def study_with_server(tmp_path_factory):
    import ray

    from kdtune.sweep import init_ray

    workdir = tmp_path_factory.mktemp("served")
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "served"}))
    init_ray(None)
    try:
        outcome = run_study(load_study(path), workdir=workdir, echo=lambda line: None)
    finally:
        ray.shutdown()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # bounded wait for the server to answer
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not start within 90 s")
    yield outcome, port
    server.terminate()
    server.wait(timeout=30)


def test_the_server_lists_one_parent_and_one_child_per_trial(study_with_server):
    outcome, port = study_with_server
    experiment = call(port, "experiments/get-by-name", {"experiment_name": "served"})["experiment"]
    runs = call(port, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    children = [t for t in tags if "mlflow.parentRunId" in t]
    assert len(runs) == len(outcome.records) + 1 and len(children) == len(outcome.records)
    assert {t["trial_id"] for t in children} == {r.trial_id for r in outcome.records}
    assert all(t["study"] == "served" and t["method"] == "hinton" and t["pareto"] in ("true", "false") for t in children)
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}


def test_runs_sort_by_an_objective_and_filter_on_the_front(study_with_server):
    outcome, port = study_with_server
    experiment_id = call(port, "experiments/get-by-name", {"experiment_name": "served"})["experiment"]["experiment_id"]
    ranked = call(port, "runs/search", {
        "experiment_ids": [experiment_id], "filter": "tags.pareto = 'true'",
        "order_by": ["metrics.`val/acc` DESC"], "max_results": 100,
    })["runs"]
    values = [next(m["value"] for m in r["data"]["metrics"] if m["key"] == "val/acc") for r in ranked]
    front = [r for r in outcome.records if r.trial_id in {
        next(t["value"] for t in run["data"]["tags"] if t["key"] == "trial_id") for run in ranked}]
    assert values == sorted(values, reverse=True) and len(ranked) == len(front) >= 1
