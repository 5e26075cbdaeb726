"""CPU priority of the driver's work that no trial waits for.

While a sweep runs, the driver also evaluates the teacher, warms up the report's process and MLflow's
model export, and writes to MLflow. None of it is needed before the sweep ends, yet on a small machine
it competes for the same cores as the trial's actor (starting up, then training). Those threads run at
the lowest priority (nice 19), so they take the CPU the trials leave idle and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

BACKGROUND_NICE = 19  # the lowest priority; raising a thread's niceness needs no privilege


def background_thread() -> None:
    """Give the calling thread (and the threads and processes it starts later) the lowest CPU priority.

    Linux only: there a thread's niceness is its own. Elsewhere this does nothing, since ``setpriority``
    would lower the whole process, the sweep's own thread included.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError):  # e.g. a sandbox that forbids it: the work runs as before
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
