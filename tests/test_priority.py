"""kdtune.priority: the driver's work that no trial waits for yields the CPU to the trials."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from kdtune import priority
from tests.fresh_python import fresh_python

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="a thread's niceness is its own on Linux only")


def _nice_here() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _in_thread(work):
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=work()))
    thread.start()
    thread.join()
    return out["value"]


@linux_only
def test_a_background_thread_and_what_it_starts_get_the_lowest_priority_and_nothing_else_does():
    before = _nice_here()

    def work():
        priority.background_thread()
        child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True)
        return _nice_here(), _in_thread(_nice_here), int(child.stdout)

    assert _in_thread(work) == (19, 19, 19)
    assert _nice_here() == before  # the calling process's other threads keep theirs
    assert _in_thread(_nice_here) == before


def test_elsewhere_than_linux_the_process_is_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(os, "setpriority", lambda *a: pytest.fail("would lower the whole process"), raising=False)
    priority.background_thread()


def test_a_system_that_refuses_leaves_the_thread_as_it_was(monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "setpriority", refuse, raising=False)
    priority.background_thread()  # no error


@linux_only
def test_the_driver_work_beside_the_sweep_runs_at_the_lowest_priority():
    from kdtune.priority import alongside as _alongside

    with _alongside(_nice_here) as pending:
        pass
    assert pending.result() == 19


@linux_only
def test_mlflow_writes_run_at_the_lowest_priority(tmp_path, mlflow_uri):
    from kdtune.tracking import Tracker

    tracker = Tracker(mlflow_uri, "x", artifact_root=tmp_path / "art")
    tracker.write_in_background()
    assert tracker._writer.submit(_nice_here).result() == 19
    tracker.flush()


@pytest.mark.slow  # a fresh interpreter: seconds of imports
@linux_only
def test_the_report_process_warms_up_at_the_lowest_priority_and_draws_at_its_own(monkeypatch):
    import kdtune.report
    from kdtune.report import _process

    monkeypatch.setattr(kdtune.report, "preload_report", lambda: seen.append(_nice_here()))
    seen: list[int] = []
    _in_thread(_process._warm_up)
    assert seen == [19]

    drawer = _process.ReportProcess()
    drawer.wait_ready()
    stat = open(f"/proc/{drawer._proc.pid}/stat").read()
    drawer.close()
    assert int(stat.rsplit(")", 1)[1].split()[16]) == _nice_here()  # field 19 of stat: its main thread's nice


def test_the_report_process_loads_no_report_library_before_its_warm_up():
    """``python -m kdtune.report._process`` imports the package first, in its main thread: the libraries
    must wait for the warm-up's thread, which has the lowest priority."""
    lines = fresh_python("""
        import sys
        import kdtune.report._process
        print(sorted(m for m in ("pandas", "matplotlib", "plotly", "optuna") if m in sys.modules))
        from kdtune.report import HYPERVOLUME_FORMAT, hypervolume_of, write_report  # still there, when asked for
        print(callable(write_report) and callable(hypervolume_of) and HYPERVOLUME_FORMAT.format(0.5) == "0.5000")
    """)
    assert lines == ["[]", "True"]
