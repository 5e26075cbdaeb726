"""``write_report`` in a Python process of its own, started while the sweep runs.

After the sweep the driver has two jobs left that are both Python: drawing the report (PNGs, fANOVA,
plotly) and the MLflow writes it queued (front members' models, post-sweep metrics), of similar length
(docs/performance.md). In one interpreter they share the GIL and take turns; here the report is drawn on
another core. The process is started early so that its imports and ``preload_report`` are done by the time
the sweep ends; they run in a thread at the lowest CPU priority (``kdtune.priority``: the trials come
first), the report itself at the priority the process was started with. It talks over its stdin/stdout
(one pickled job in, one pickled result out) and is started as ``python -m kdtune.report._process``: unlike
a ``multiprocessing`` child, it never re-imports the caller's main script, so a user's script that runs a
study without an ``if __name__ == "__main__"`` guard is not run again in it.

If the process cannot be started or dies, the report is written in the calling process instead.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kdtune import priority

log = logging.getLogger(__name__)
_READY = b"ready\n"  # the process's first line: its libraries are loaded and warm
# No thread in the process but its main one: it forks to draw (``_drawing``), which is only safe in a
# single-threaded process. BLAS thread pools (the report's arithmetic is small) and the background thread
# of the jemalloc that pyarrow (under pandas) brings are turned off.
_ONE_THREAD = {**{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
               "JE_ARROW_MALLOC_CONF": "background_thread:false"}


class ReportProcess:
    """A process that imports and warms up the report's libraries now and writes one report later."""

    def __init__(self) -> None:
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**os.environ, **_ONE_THREAD},
            )
        except OSError as err:  # e.g. no process may be started here: the report is drawn in this process
            log.warning("cannot start a process for the report (%s); drawing it in this one", err)
            self._proc = None

    def wait_ready(self) -> None:
        """Block until the process has loaded and warmed up (then it waits, idle, for its job: nothing
        runs beside the serial latency measurement); if it died meanwhile, the report is drawn here."""
        if self._proc is not None and self._proc.stdout.read(len(_READY)) != _READY:  # type: ignore[union-attr]
            log.warning("the report's process exited early (code %s); drawing the report in this one",
                        self._proc.poll())
            self.close()

    def write(self, out_dir: Path, **kwargs: Any) -> dict[str, Path]:
        """``write_report(out_dir, **kwargs)`` in the process (in this one if it is gone); its errors are
        raised here as they were raised there. Call ``wait_ready`` first."""
        from kdtune.report import write_report

        proc, self._proc = self._proc, None
        if proc is None:
            return write_report(out_dir, **kwargs)
        try:
            with proc.stdin:  # type: ignore[union-attr]
                pickle.dump((out_dir, kwargs), proc.stdin)
            status, value = pickle.load(proc.stdout)  # type: ignore[arg-type]
        except (OSError, EOFError, pickle.UnpicklingError) as err:
            log.warning("the report's process failed (%s: %s); drawing the report in this one",
                        type(err).__name__, err)
            return write_report(out_dir, **kwargs)
        finally:
            _stop(proc, wait_s=5.0)
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop the process if it still runs (nothing was written, or the study is being abandoned)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc, wait_s=0.0)


def _stop(proc: subprocess.Popen, *, wait_s: float) -> None:
    """Let the process exit on its own for ``wait_s`` seconds, then kill it; close its pipes."""
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:  # the pipe is broken: the process is gone anyway
            pass


def _single_threaded() -> bool:
    """Whether this process has no thread but its main one, so it may fork to draw (``_drawing``): checked
    through Linux's /proc; elsewhere (macOS, where forking a process that used system frameworks is
    unsafe anyway) the report is drawn without forking."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _await_one_thread(timeout_s: float = 1.0) -> None:
    """``join`` returns when a thread's Python work is done; its OS thread leaves ``/proc`` a moment later."""
    deadline = time.monotonic() + timeout_s
    while os.path.isdir("/proc/self/task") and not _single_threaded() and time.monotonic() < deadline:
        time.sleep(0.001)


def _warm_up() -> None:
    """The report's imports and first-use work, in a thread of the lowest priority (Linux)."""
    priority.background_thread()
    from kdtune.report import preload_report

    preload_report()


def _serve() -> None:
    """The process: warm up, then write the one report it is sent and send back its paths or error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the driver's to handle
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the reply
    warm = threading.Thread(target=_warm_up, name="kdtune-report-warm-up")
    warm.start()
    warm.join()
    _await_one_thread()  # the process forks to draw (``_single_threaded``)
    from kdtune.report import write_report  # loaded by the warm-up
    try:
        out.write(_READY)
        out.flush()
        out_dir, kwargs = pickle.load(sys.stdin.buffer)
    except (EOFError, BrokenPipeError):  # the driver closed it without a job, or is gone
        return
    try:
        reply: tuple[str, Any] = ("ok", write_report(out_dir, **kwargs, draw_apart=_single_threaded()))
    except Exception as err:  # noqa: BLE001 - every error goes back to the driver, which raises it
        reply = ("error", err)
    try:
        pickle.dump(reply, out)
        out.flush()
    except BrokenPipeError:  # the driver is gone
        pass


if __name__ == "__main__":
    _serve()
    # Every file is written and closed and the reply sent: skip the interpreter's teardown of matplotlib,
    # plotly, pandas and scikit-learn, which the driver would wait for (docs/performance.md).
    sys.stderr.flush()
    os._exit(0)
