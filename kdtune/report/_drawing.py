"""Drawing some of the report's PNGs beside the rest of the report.

Text layout and rasterising make the PNGs most of a report's time (docs/performance.md), all of it Python
under one GIL. In the report's own process (``_process``), which is single-threaded, the front plots
(pairwise and 3-D) and the hypervolume by trial (``_figures.drawn_apart``) are drawn in a forked child while
the parent computes the importances, draws everything else and builds the interactive figures: the child
starts warm (fonts, matplotlib) at the cost of a ``fork``. If the child fails, the parent draws those PNGs
itself, so a failure there is raised as it would be without the child.
Anywhere else (a driver with Ray's and MLflow's threads, where forking is unsafe) they are drawn at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Png:
    """One PNG: ``draw(path, *args, **kwargs)`` writes ``path``."""

    path: Path
    draw: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> None:
        self.draw(self.path, *self.args, **self.kwargs)


class Drawing:
    """``pngs`` ({file stem: Png}) under way: in a forked child with ``fork``, else drawn here and now.

    As a context manager: leaving the block normally waits for them (``wait``), leaving it with an error
    only reaps the child (``close``).
    """

    def __init__(self, pngs: Mapping[str, Png], *, fork: bool = False) -> None:
        self.pngs = dict(pngs)
        self._child: int | None = None
        if fork and self.pngs:
            self._child = _fork(self._draw_and_exit)
        if self._child is None:
            self._draw()

    def __enter__(self) -> Drawing:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is None:
            self.wait()
        else:
            self.close()

    @property
    def paths(self) -> dict[str, Path]:
        """{file stem: path} of every PNG, in the given order (written once ``wait`` returns)."""
        return {stem: png.path for stem, png in self.pngs.items()}

    def wait(self) -> dict[str, Path]:
        """Wait for the child; if it did not draw every PNG, draw them here (raising what that raises)."""
        if self._reap() not in (None, 0):
            log.warning("the report's drawing process failed; drawing its figures in this one")
            self._draw()
        return self.paths

    def _reap(self) -> int | None:
        """Wait for the child, if any: its exit code (None without a child)."""
        child, self._child = self._child, None
        if child is None:
            return None
        _, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        """Wait for the child without drawing anything (the report is being abandoned)."""
        self._reap()

    def _draw(self) -> None:
        for png in self.pngs.values():
            png()

    def _draw_and_exit(self) -> None:
        code = 1
        try:
            self._draw()
            code = 0
        finally:  # never return into the parent's code: no teardown, no flushing of its buffers
            os._exit(code)


def _fork(child: Callable[[], None]) -> int | None:
    """Run ``child`` in a forked process; its pid, or None where this platform or process cannot fork."""
    if not hasattr(os, "fork"):
        return None
    try:
        pid = os.fork()
    except OSError as err:
        log.warning("cannot fork to draw the report's figures (%s); drawing them in this process", err)
        return None
    if pid == 0:
        child()
    return pid
