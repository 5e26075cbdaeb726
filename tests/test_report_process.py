"""kdtune.report._process: the report drawn in a process of its own is the report drawn in the driver."""

from __future__ import annotations

import logging
import os

import pytest

from kdtune.errors import KdtuneError
from kdtune.report import write_report
from kdtune.report._process import ReportProcess
from tests.test_report import METRIC_COLUMNS, OBJECTIVES, SEARCH_PARAMS, TEACHER, make_records

pytestmark = pytest.mark.slow  # each test starts the report's process: seconds of imports and warm-up

KWARGS = dict(study_name="demo", records=make_records(), objectives=OBJECTIVES, search_params=SEARCH_PARAMS,
              teacher_metrics=TEACHER, meta={"machine": "test box"}, metric_columns=METRIC_COLUMNS)


def _texts(out_dir):
    return {p.name: p.read_text(encoding="utf-8") for p in out_dir.iterdir() if p.suffix in (".csv", ".md")}


def test_the_process_writes_what_write_report_writes(tmp_path):
    drawer = ReportProcess()
    drawer.wait_ready()
    there = drawer.write(tmp_path / "process", **KWARGS)
    here = write_report(tmp_path / "here", **KWARGS)
    assert {k: p.name for k, p in there.items()} == {k: p.name for k, p in here.items()}
    assert all(p.parent == tmp_path / "process" and p.stat().st_size > 0 for p in there.values())
    assert _texts(tmp_path / "process") == _texts(tmp_path / "here")
    pngs = [k for k, p in here.items() if p.suffix == ".png"]
    # front_3d and hypervolume_by_trial are drawn in its forked child, the other two in the process itself
    assert {"front_3d", "hypervolume_by_trial", "robust_acc_vs_eps", "importance"} <= set(pngs)
    assert all(there[k].read_bytes() == here[k].read_bytes() for k in pngs)  # the same figures, pixel for pixel
    drawer.close()  # nothing left to stop


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_the_ready_process_has_no_thread_but_its_main_one():
    """It forks to draw (kdtune.report._drawing): safe only while no other thread holds a lock."""
    drawer = ReportProcess()
    drawer.wait_ready()
    threads = os.listdir(f"/proc/{drawer._proc.pid}/task")
    names = [open(f"/proc/{drawer._proc.pid}/task/{t}/comm").read().strip() for t in threads]
    drawer.close()
    assert len(threads) == 1, names


def test_an_error_in_the_process_is_raised_in_the_caller(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    drawer = ReportProcess()
    drawer.wait_ready()
    with pytest.raises(KdtuneError, match="cannot write the report into") as info:
        drawer.write(blocker / "report", **KWARGS)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("when", ["before it is ready", "after it is ready"])
def test_a_process_that_dies_leaves_the_report_to_the_caller(tmp_path, caplog, when):
    """Killed while loading, wait_ready notices; killed while waiting for its job, write notices."""
    drawer = ReportProcess()
    if when == "after it is ready":
        drawer.wait_ready()
    drawer._proc.kill()
    drawer._proc.wait()
    with caplog.at_level(logging.WARNING, logger="kdtune.report._process"):
        if when == "before it is ready":
            drawer.wait_ready()
        written = drawer.write(tmp_path / "report", **KWARGS)
    assert written["report_md"].exists() and written["importance"].exists()
    assert "drawing the report in this one" in caplog.text
