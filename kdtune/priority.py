"""CPU priority of the driver's work that no trial waits for.

While a sweep runs, the driver also evaluates the teacher, warms up the report's process and MLflow's
model export, and writes to MLflow. None of it is needed before the sweep ends, yet on a small machine
it competes for the same cores as the trial's actor (starting up, then training). Those threads run at
the lowest priority (nice 19), so they take the CPU the trials leave idle and nothing else.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

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


@contextlib.contextmanager
def alongside(work: Callable[[], Any]) -> Iterator[concurrent.futures.Future]:
    """Run ``work`` in a driver thread, with one torch thread and the lowest CPU priority, while the block
    runs (the sweep, whose trials have the other cores and come first); the future holds its result.
    Leaving the block waits for it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kdtune-driver",
                                                   initializer=background_thread) as pool:
            yield pool.submit(work)
    finally:
        torch.set_num_threads(threads)
