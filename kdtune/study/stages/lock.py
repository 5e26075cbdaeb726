"""Stage: take this study's driver lock (``kdtune.study._lock``), so one driver runs a study at a time.

It runs after the checks of the user's code (which write nothing) and before anything is opened or
written; the run's end (``kdtune.study._pipeline``) releases it, whatever stage the run stopped at.
"""

from __future__ import annotations

from kdtune.study._lock import DriverLock
from kdtune.study._run import StudyRun


def acquire(run: StudyRun) -> None:
    """Hold the study's lock: another live driver makes this one refuse (exit 2) or, with ``run.wait``,
    wait; a lock left by a driver that is gone is taken over."""
    lock = DriverLock(run.paths.storage, run.cfg.name)
    lock.acquire(wait=run.wait, echo=run.echo)
    run.lock = lock
