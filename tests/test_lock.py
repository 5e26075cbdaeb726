"""One driver per study (``kdtune.study._lock.DriverLock``): a lock row in the study's own SQLite store,
checked with two locks in one process, rows written by hand for holders that are gone, and a real
second process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from kdtune.study import _lock
from kdtune.study._lock import TABLE, DriverLock, StudyBusy


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'store' / 'optuna.db'}"  # its folder does not exist yet


def _put(url: str, study: str, *, host: str, pid: int, heartbeat: float) -> None:
    """A holder's row as another driver would have left it."""
    DriverLock(url, "other-study").holder()  # creates the table
    with sa.create_engine(url).begin() as db:
        db.execute(sa.text(f"INSERT INTO {TABLE} VALUES (:s, 'theirs', :h, :p, :t, :t)"),
                   {"s": study, "h": host, "p": pid, "t": heartbeat})


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_driver_is_refused_with_the_holder_named_until_the_first_releases(url):
    first, second = DriverLock(url, "s"), DriverLock(url, "s")
    with first.held(echo=lambda line: None):
        with pytest.raises(StudyBusy) as err:
            second.acquire(echo=lambda line: None)
        assert err.value.exit_code == 2
        message = str(err.value)
        assert message.startswith(f"study 's' is being run by another driver (host {socket.gethostname()}, "
                                  f"pid {os.getpid()}, since ") and "--wait" in message, message
        assert "\n" not in message
        DriverLock(url, "another study").acquire()  # other studies are free
    assert first.holder() is None or first.holder().token != first.me.token
    with second.held(echo=lambda line: None):
        assert second.holder().token == second.me.token


def test_a_lock_whose_holder_died_on_this_host_is_taken_over_at_once(url):
    pid = _dead_pid()
    _put(url, "s", host=socket.gethostname(), pid=pid, heartbeat=time.time())
    lines = []
    lock = DriverLock(url, "s")
    with lock.held(echo=lines.append):
        assert lock.holder().token == lock.me.token and lock.taken_over.pid == pid
    assert len(lines) == 1 and lines[0].startswith("study 's': took over the lock of a driver that is gone (host ")


def test_a_lock_elsewhere_is_held_while_its_heartbeat_is_fresh_and_taken_over_once_stale(url):
    _put(url, "fresh", host="node-7", pid=1, heartbeat=time.time())
    with pytest.raises(StudyBusy, match=r"host node-7, pid 1, since "):
        DriverLock(url, "fresh").acquire()
    _put(url, "stale", host="node-7", pid=1, heartbeat=time.time() - 61)
    lock = DriverLock(url, "stale", stale_s=60)
    lock.acquire(echo=lambda line: None)
    assert lock.taken_over.host == "node-7"
    lock.release()


def test_the_heartbeat_moves_and_a_driver_knows_when_its_lock_was_taken(url, caplog):
    lock = DriverLock(url, "s", heartbeat_s=0.05)
    lock.acquire()
    first = lock.holder().heartbeat
    time.sleep(0.3)
    assert lock.holder().heartbeat > first
    with sa.create_engine(url).begin() as db:  # another driver took it over (as after a long stall)
        db.execute(sa.text(f"UPDATE {TABLE} SET token = 'theirs' WHERE study = 's'"))
    time.sleep(0.3)
    assert lock.lost and "took over this driver's lock" in caplog.text
    lock.release()
    assert lock.holder().token == "theirs"  # release removes only its own row


def test_wait_starts_when_the_holder_finishes(url, monkeypatch):
    monkeypatch.setattr(_lock, "_POLL_S", 0.05)
    holder = DriverLock(url, "s")
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    lines, lock = [], DriverLock(url, "s")
    started = time.monotonic()
    with lock.held(wait=True, echo=lines.append):
        assert time.monotonic() - started >= 0.25
    assert len(lines) == 1 and lines[0].endswith("; waiting for it")


@pytest.mark.slow  # a fresh interpreter imports kdtune (seconds)
def test_a_driver_in_another_process_is_refused(url):
    lock = DriverLock(url, "s")
    with lock.held():
        code = ("from kdtune.study._lock import DriverLock, StudyBusy\n"
                f"try:\n    DriverLock({url!r}, 's').acquire()\nexcept StudyBusy as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False).stdout
    assert f"pid {os.getpid()}" in out
