"""One driver per study at a time: a lock row in the study's own storage (its Optuna database).

The lock lives where the study's record lives, so it holds wherever that record is shared: two drivers on
one machine, or on several machines that share a database. A row names its holder (host, pid, start time)
and carries a heartbeat its driver refreshes every ``HEARTBEAT_S`` seconds. A lock whose holder is gone
(its pid dead on this host, or its heartbeat older than ``STALE_S``: a killed or hung driver elsewhere) is
taken over, and the new driver resumes the study as after any interruption.

Every step is one short SQL statement in its own transaction (SQLite, PostgreSQL and MySQL alike):
``INSERT`` takes a free lock (the primary key refuses a second holder), a conditional ``UPDATE ... WHERE
token = <the stale holder's>`` takes over a stale one (only one taker can match), ``DELETE`` releases it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from kdtune.errors import KdtuneError
from kdtune.urls import sqlite_path

log = logging.getLogger(__name__)
TABLE = "kdtune_driver_locks"
HEARTBEAT_S = 10.0
STALE_S = 60.0  # six missed heartbeats
_POLL_S = 2.0  # between tries while waiting for the holder
_CREATE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (study VARCHAR(512) NOT NULL PRIMARY KEY, "
           "token VARCHAR(64) NOT NULL, host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, "
           "started DOUBLE PRECISION NOT NULL, heartbeat DOUBLE PRECISION NOT NULL)")


class StudyBusy(KdtuneError):
    """Another driver holds the study's lock (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Holder:
    """Who holds a study's lock."""

    token: str
    host: str
    pid: int
    started: float  # time.time() when it took the lock
    heartbeat: float

    def describe(self) -> str:
        since = datetime.datetime.fromtimestamp(self.started).astimezone().isoformat(timespec="seconds")
        return f"host {self.host}, pid {self.pid}, since {since}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class DriverLock:
    """The lock of study ``study`` in the database at ``url`` (an Optuna storage URL)."""

    def __init__(self, url: str, study: str, *, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        self.url, self.study = url, study
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.me = Holder(uuid.uuid4().hex, socket.gethostname(), os.getpid(), 0.0, 0.0)
        self._engine: sa.Engine | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = False  # set when another driver took the lock over (our heartbeat stopped matching)
        self.taken_over: Holder | None = None  # the stale holder this driver took the lock from

    # ------------------------------------------------------------------ public

    @contextlib.contextmanager
    def held(self, *, wait: bool = False, echo: Callable[[str], None] = print) -> Iterator[DriverLock]:
        """Hold the lock for the block: refuse (``StudyBusy``) while another driver holds it, or with
        ``wait`` wait for it to finish; a stale lock is taken over with a line saying whose it was."""
        self.acquire(wait=wait, echo=echo)
        try:
            yield self
        finally:
            self.release()

    def acquire(self, *, wait: bool = False, echo: Callable[[str], None] = print) -> None:
        waiting = False
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            if not wait:
                raise StudyBusy(
                    f"study '{self.study}' is being run by another driver ({holder.describe()}); let it finish, "
                    "run again with --wait to start when it ends, or stop that driver (a killed driver's lock "
                    f"is taken over at once on its host, elsewhere after {self.stale_s:g} s without a heartbeat)"
                )
            if not waiting:
                echo(f"study '{self.study}' is being run by another driver ({holder.describe()}); waiting for it")
                waiting = True
            time.sleep(_POLL_S)
        if self.taken_over is not None:
            echo(f"study '{self.study}': took over the lock of a driver that is gone ({self.taken_over.describe()})")
        self._beat = threading.Thread(target=self._heartbeat, name="kdtune-driver-lock", daemon=True)
        self._beat.start()

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            with self._db().begin() as db:
                db.execute(sa.text(f"DELETE FROM {TABLE} WHERE study = :s AND token = :t"),
                           {"s": self.study, "t": self.me.token})
        except sa.exc.SQLAlchemyError as err:  # the database is gone: the heartbeat goes stale instead
            log.warning("could not release the lock of study '%s' (%s); it goes stale in %g s",
                        self.study, err.__class__.__name__, self.stale_s)
        finally:
            if self._engine is not None:
                self._engine.dispose()

    def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody)."""
        with self._db().begin() as db:
            row = db.execute(sa.text(f"SELECT token, host, pid, started, heartbeat FROM {TABLE} WHERE study = :s"),
                             {"s": self.study}).first()
        return Holder(row[0], row[1], int(row[2]), float(row[3]), float(row[4])) if row is not None else None

    # ------------------------------------------------------------------ internals

    def _db(self) -> sa.Engine:
        if self._engine is None:
            connect = {}
            path = sqlite_path(self.url)
            if path is not None:
                if str(path) not in ("", ":memory:"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                connect = {"timeout": 60}  # wait for another driver's write instead of failing
            self._engine = sa.create_engine(self.url, connect_args=connect, poolclass=sa.pool.NullPool)
            with self._engine.begin() as db:
                db.execute(sa.text(_CREATE))
        return self._engine

    def _try_acquire(self) -> Holder | None:
        """None once the lock is ours; else the live holder."""
        for _ in range(10):  # a race with another taker: look again
            now = time.time()
            mine = {"s": self.study, "t": self.me.token, "h": self.me.host, "p": self.me.pid, "now": now}
            try:
                with self._db().begin() as db:
                    db.execute(sa.text(f"INSERT INTO {TABLE} (study, token, host, pid, started, heartbeat) "
                                       "VALUES (:s, :t, :h, :p, :now, :now)"), mine)
                return None
            except sa.exc.IntegrityError:
                pass  # held: by whom?
            holder = self.holder()
            if holder is None:
                continue  # released in between
            if not self._stale(holder, now):
                return holder
            with self._db().begin() as db:
                taken = db.execute(sa.text(f"UPDATE {TABLE} SET token = :t, host = :h, pid = :p, started = :now, "
                                           "heartbeat = :now WHERE study = :s AND token = :old"),
                                   {**mine, "old": holder.token}).rowcount
            if taken == 1:
                self.taken_over = holder
                return None
        raise KdtuneError(f"could not take the lock of study '{self.study}' after 10 tries; run again")

    def _stale(self, holder: Holder, now: float) -> bool:
        if now - holder.heartbeat > self.stale_s:
            return True
        return holder.host == self.me.host and holder.pid != self.me.pid and not _alive(holder.pid)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._db().begin() as db:
                    n = db.execute(sa.text(f"UPDATE {TABLE} SET heartbeat = :now WHERE study = :s AND token = :t"),
                                   {"now": time.time(), "s": self.study, "t": self.me.token}).rowcount
            except sa.exc.SQLAlchemyError as err:  # a passing outage: the next beat tries again
                log.debug("heartbeat of study '%s' failed: %s", self.study, err)
                continue
            if n == 0 and not self.lost:
                self.lost = True
                log.warning("study '%s': another driver took over this driver's lock (its heartbeat was older than "
                            "%g s); two drivers now run the study", self.study, self.stale_s)
