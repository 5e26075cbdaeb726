"""One worker process of the GPU packing benchmark: trials of one configuration back to back until a deadline.

A trial is what ``kdtune.sweep._trainable.run_trial`` runs in a Ray worker, without Ray: ``run_student``
(train and evaluate) with a ``MethodContext``, then the in-trial latency. The data, the frozen teacher and
its logits are prepared once per process, as a sweep's driver prepares them once and ships them to trials.
"""

from __future__ import annotations

import multiprocessing.queues
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from kdtune.methods import MethodContext
    from kdtune.spec import StudyConfig

FORBIDDEN = ("ray", "optuna", "mlflow")  # what the GPU machine lacks; nothing here may import them
KEPT_METRICS = ("val/acc", "test/acc")


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker is started with."""

    study: str  # path of the study file (``_gpu_study.write_study``)
    device: str  # "cuda" or "cpu"
    threads: int  # torch threads of the process (a Ray trial gets its CPU request)
    amps: tuple[str, ...]  # resources.amp settings to warm up (one 1-epoch trial each)


@dataclass(frozen=True)
class Cell:
    """One measurement: every active worker runs trials with ``amp`` until ``deadline`` (``time.monotonic``)."""

    key: str
    amp: str
    deadline: float


class WindowClosed(Exception):
    """Raised at an epoch's end once the cell's deadline has passed: the trial in flight stops there."""


def forbidden_modules() -> list[str]:
    """The modules of Ray, Optuna or MLflow this process has imported."""
    return sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in FORBIDDEN and mod is not None)


def worker_main(wid: int, setup: WorkerSetup, commands: multiprocessing.queues.Queue,
                results: multiprocessing.queues.Queue) -> None:
    """The process: prepare, report ``ready``, then run each ``Cell`` from ``commands`` until None."""
    try:
        started = time.monotonic()
        state = _prepare(setup)
        results.put(("ready", wid, {"setup_s": round(time.monotonic() - started, 1), **state.info}))
        while (cell := commands.get()) is not None:
            results.put(("done", wid, run_cell(state, cell, wid)))
    except BaseException:  # noqa: BLE001 - reported to the driver, which stops the benchmark
        results.put(("error", wid, traceback.format_exc()))


@dataclass
class _State:
    cfg: StudyConfig
    ctx: MethodContext
    device: torch.device
    info: dict[str, Any]


def _prepare(setup: WorkerSetup) -> _State:
    """Data on the device, the teacher (trained and cached by the first worker, loaded by the others), its
    logits, and one warm-up trial of one epoch per amp setting."""
    import torch

    from kdtune.cache import cache_dir
    from kdtune.compat.optim import optimizers_without_dynamo
    from kdtune.config import load_study, with_overrides
    from kdtune.data import load_dataset
    from kdtune.evaluate import accuracy, logits_of
    from kdtune.methods import MethodContext
    from kdtune.teacher import frozen, load_or_train_teacher

    optimizers_without_dynamo()  # as run_trial does: this process compiles nothing
    torch.set_num_threads(setup.threads)
    device = torch.device(setup.device)
    cfg = load_study(setup.study)
    data = load_dataset(cfg.dataset.name, cfg.dataset.params).to(device)
    teacher = load_or_train_teacher(cfg.teacher, data, seed=cfg.seed, root=cache_dir(cfg.output.cache))
    model = frozen(teacher.model, device)
    with torch.no_grad():
        logits = logits_of(model, data.train)
    ctx = MethodContext(data=data, teacher=model, teacher_logits=logits, student_spec=cfg.student, seed=cfg.seed,
                        cache=cache_dir(cfg.output.cache))
    info = {"teacher_from_cache": teacher.from_cache, "teacher_val_acc": accuracy(model, data.val)}
    state = _State(cfg, ctx, device, info)
    for amp in setup.amps:
        warm = with_overrides(cfg, {"resources.amp": amp, "student.epochs": 1})
        run_trial(warm, ctx, device, on_epoch=None)
    return state


def run_trial(cfg: StudyConfig, ctx: MethodContext, device: torch.device, *,
              on_epoch: Callable[[int, dict[str, float]], None] | None) -> dict[str, float]:
    """``run_trial``'s work for one configuration (``kdtune.student.train_and_time``, as a sweep's trial runs it)."""
    from kdtune.student import train_and_time

    run, latency = train_and_time(cfg, ctx, device=device, on_epoch=on_epoch)
    return {**run.metrics, **latency, "epoch": float(len(run.history))}


def run_cell(state: _State, cell: Cell, wid: int) -> dict[str, Any]:
    """Trials until ``cell.deadline``: each one's start and end (``time.monotonic``), epochs and metrics."""
    import torch

    from kdtune.config import with_overrides

    cuda = state.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trials: list[dict[str, Any]] = []
    while time.monotonic() < cell.deadline:
        seed = state.cfg.seed + 1000 * (wid + 1) + len(trials)  # each trial its own seed, as a sweep's would
        cfg = with_overrides(state.cfg, {"resources.amp": cell.amp, "seed": seed})
        epochs: list[float] = []

        def on_epoch(epoch: int, stats: dict[str, float], epochs: list[float] = epochs) -> None:
            epochs.append(time.monotonic())
            if time.monotonic() >= cell.deadline:
                raise WindowClosed

        start = time.monotonic()
        try:
            metrics = run_trial(cfg, state.ctx, state.device, on_epoch=on_epoch)
        except WindowClosed:
            trials.append({"start": start, "end": time.monotonic(), "finished": False, "epochs": epochs})
            break
        kept = {k: v for k, v in metrics.items() if k in KEPT_METRICS}
        trials.append({"start": start, "end": time.monotonic(), "finished": True, "epochs": epochs, **kept})
    peak = torch.cuda.max_memory_reserved() / 2**20 if cuda else None
    return {"cell": cell.key, "trials": trials, "peak_reserved_mib": peak, "forbidden": forbidden_modules()}
