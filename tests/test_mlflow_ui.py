"""MLflow's own UI on a kdtune experiment: a real ``mlflow server`` opened in headless chromium (the DevTools
client of tests/test_report_browser.py). Which page an experiment opens on is told by the URL the UI
redirects to (``#/experiments/<id>/runs`` or ``.../overview``) and by what the page then shows.

MLflow 3.17's UI picks that page from its sidebar's GenAI / Model training switch (``?workflowType=`` in
the URL, else the browser's localStorage, else GenAI), not from the experiment's ``mlflow.experimentKind``
tag that kdtune sets: with the switch at its default, kdtune's experiment opens on the GenAI overview too.
Skipped, saying why, when no chromium is installed (CI installs it: .ci/run).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from kdtune.tracking import Tracker
from tests.test_report_browser import CHROMIUM, DevTools

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH: install it with `apt-get install -y chromium` (as .ci/run does)"
    ),
    pytest.mark.slow,  # an MLflow server and a headless browser: seconds to start
]
SWEEP, PLAIN_RUN = "sweep-001", "plain run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(uri: str, cwd, log) -> tuple[subprocess.Popen, int]:
    """``mlflow server`` on a free port of 127.0.0.1, once it answers /health (90 s at most)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=log,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server, port
        except OSError:
            time.sleep(0.5)
    stop(server)
    pytest.fail(f"mlflow server did not start within 90 s (exit {server.returncode})")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A store with kdtune's experiment (one sweep run, made by ``Tracker``) and a plain one made with
    MLflow's client (one run), served by ``mlflow server``; a headless chromium page."""
    root = tmp_path_factory.mktemp("mlflow-ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri, "kdtune study", artifact_root=root / "mlartifacts")
    tracker.start_sweep(SWEEP, {"method.temperature": 4.0}, {"study": "kdtune study"})
    tracker.end_sweep()
    assert tracker.failures == []
    client = MlflowClient(uri)
    plain = client.create_experiment("plain", artifact_location=(root / "mlartifacts").as_uri())
    client.set_terminated(client.create_run(plain, run_name=PLAIN_RUN).info.run_id)
    with open(root / "server.log", "wb") as log:
        server, port = start_server(uri, root, log)
        try:
            browser = DevTools(root / "profile")
            try:
                for domain in ("Page", "Runtime"):
                    browser.call(f"{domain}.enable")
                served = Tracker(f"http://127.0.0.1:{port}", "kdtune study", artifact_root=None)
                yield browser, port, {"kdtune": tracker.experiment_id, "plain": plain, "link": served.runs_link()}
            finally:
                browser.close()
        finally:
            stop(server)


def landing(browser: DevTools, port: int, experiment_id: str, *, query: str = "", run_name: str,
            timeout: float = 60.0, url: str | None = None) -> tuple[str, str, str]:
    """Open ``#/experiments/<id><query>`` and wait until the UI has redirected to one of the experiment's
    pages and drawn it: (the page's name, the URL, the page's text)."""
    browser.call("Page.navigate", url="about:blank")  # a fresh load of the app for every experiment
    browser.call("Page.navigate", url=url or f"http://127.0.0.1:{port}/#/experiments/{experiment_id}{query}")
    deadline, href = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        time.sleep(0.3)
        href = browser.evaluate("location.href") or ""
        found = re.search(rf"#/experiments/{experiment_id}/([a-z-]+)", href)
        text = browser.evaluate("document.body ? document.body.innerText : ''") or ""
        if found and found[1] != "runs" and "Overview" in text:
            return found[1], href, text
        if found and found[1] == "runs" and run_name in text:  # the runs table has drawn its rows
            return found[1], href, text
    raise TimeoutError(f"experiment {experiment_id} not drawn after {timeout:.0f} s; last URL {href}")


def test_an_untagged_experiment_opens_on_the_genai_overview(ui):
    browser, port, ids = ui
    page, href, text = landing(browser, port, ids["plain"], run_name=PLAIN_RUN)
    assert page == "overview" and "workflowType=genai" in href
    assert PLAIN_RUN not in text  # no runs table


def test_the_link_kdtune_prints_opens_its_experiment_on_the_runs_table(ui):
    browser, port, ids = ui
    assert ids["link"] == f"http://127.0.0.1:{port}/#/experiments/{ids['kdtune']}?workflowType=machine_learning"
    page, href, text = landing(browser, port, ids["kdtune"], url=ids["link"], run_name=SWEEP)
    assert page == "runs" and "workflowType=machine_learning" in href and SWEEP in text
    assert browser.evaluate("document.querySelectorAll('.ag-root').length") >= 1  # the runs table


@pytest.mark.xfail(
    strict=True, raises=AssertionError,
    reason="MLflow 3.17's UI ignores mlflow.experimentKind while its workflow switch is on (built in): the "
           "sidebar's GenAI / Model training choice picks the page (mlflow/mlflow#24498); passes once MLflow "
           "follows the tag, and then this mark must go",
)
def test_kdtunes_experiment_opens_on_its_runs_table_by_its_tag_alone(ui):
    browser, port, ids = ui
    page, _, text = landing(browser, port, ids["kdtune"], run_name=SWEEP)
    assert page == "runs" and SWEEP in text
