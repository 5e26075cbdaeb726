"""The Ray Tune trainable: sampled config -> typed config -> ``kdtune.student`` -> report (one trial)."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import torch
from ray import tune

from kdtune.cache import cache_dir, save_atomic
from kdtune.compat.optim import optimizers_without_dynamo
from kdtune.config import with_overrides
from kdtune.errors import KdtuneError
from kdtune.methods import MethodContext
from kdtune.models import build_model
from kdtune.plugins import load_plugins
from kdtune.rungs import RungProbe, costs_file
from kdtune.student import train_and_time
from kdtune.teacher import frozen
from kdtune.train import FitState

if TYPE_CHECKING:
    from kdtune.data import Dataset
    from kdtune.spec import StudyConfig
    from kdtune.sweep._job import SweepJob

log = logging.getLogger(__name__)


STUDENT_FILE = "student.pt"
CONFIG_FILE = "overrides.json"
# The periodic checkpoint (``EpochReporter``): the FitState (student, distiller, optimizer, RNGs, history)
# a retried trial resumes from, so a worker that died costs at most ``resources.checkpoint_every_s`` of
# training (or one epoch, when epochs are longer), not the whole trial.
STATE_FILE = "fit_state.pt"
# Epochs a report carries besides its own (those trained since the previous report), as a JSON list of
# ``{"epoch": n, <metric>: value, ...}``: the driver logs each to MLflow at its own step.
EPOCHS_KEY = "kdtune/epochs"
# A deterministic failure (NaN loss, a bad configuration): reported as the trial's final result so the
# sweep records it at once; Ray's retries are kept for failures of the infrastructure (a dead worker).
FAILED_KEY = "kdtune/error"


def make_trainable(job: SweepJob) -> Any:
    """The sweep's trainable with data, teacher and its logits shipped once through Ray's object store.

    Each finished trial also writes its student's weights to ``<job.students_dir>/<trial id>.pt``.
    """
    shipped = dataclasses.replace(job, teacher=job.teacher.cpu(), teacher_logits=job.teacher_logits.cpu(),
                                  students_dir=job.students_dir.resolve())  # trials run in another directory
    trainable = tune.with_parameters(run_trial, job=shipped)
    return tune.with_resources(trainable, {"cpu": job.cfg.resources.cpu, "gpu": job.cfg.resources.gpu})


def trial_device() -> torch.device:
    """The device Ray assigned to this trial: its first GPU if it got one, else the CPU."""
    return torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")


def run_trial(config: dict[str, Any], *, job: SweepJob) -> None:
    """One trial of ``job``'s sweep: ``config`` maps searched YAML paths to sampled values.

    A retried trial (its worker died) resumes from the latest epoch's checkpoint.
    """
    optimizers_without_dynamo()  # this process is the trial's alone and compiles nothing: see kdtune.compat.optim
    load_plugins(job.cfg.plugins)  # the user's components, registered in this worker too
    cfg = with_overrides(job.cfg, config)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))  # never more threads than Ray gave us
    device = trial_device()
    data = job.data.to(device)
    ctx = MethodContext(
        data=data, teacher=frozen(job.teacher, device), teacher_logits=job.teacher_logits.to(device),
        student_spec=cfg.student, seed=cfg.seed, cache=cache_dir(cfg.output.cache),
    )
    reporter = EpochReporter(cfg.resources.checkpoint_every_s, probe=rung_probe(cfg, data, device))
    try:
        run, latency = train_and_time(cfg, ctx, device=device, on_state=reporter,
                                      resume=resume_state(tune.get_checkpoint()))
    except KdtuneError as err:  # e.g. a student that cannot be exported to ONNX: its trial fails
        tune.report({FAILED_KEY: str(err), **reporter.unreported()})
        return
    # "epoch": the epochs trained (fewer than student.epochs when early stopping ended the training)
    final = {**run.metrics, **latency, "epoch": len(run.history), "provenance": run.provenance.as_dict(),
             **reporter.unreported()}
    # before the final report: a COMPLETE trial always has its weights there
    save_atomic(job.students_dir / f"{tune.get_context().get_trial_id()}.pt", run.student.state_dict(),
                what="the student's weights", checksum=False)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(run.student.state_dict(), Path(tmp) / STUDENT_FILE)
        (Path(tmp) / CONFIG_FILE).write_text(json.dumps(config, sort_keys=True))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


def rung_probe(cfg: StudyConfig, data: Dataset, device: torch.device) -> RungProbe | None:
    """The trial's cheap objective measurements at its early-stopping rungs; None without rungs (fifo)."""
    sched = cfg.search.scheduler
    if sched.name != "moasha":
        return None
    info, model = data.info, cfg.student.model
    costs = costs_file(cache_dir(cfg.output.cache), study=cfg.name, model=model, input_shape=data.input_shape,
                       latency=cfg.evaluation.latency, device=device)
    return RungProbe([o.metric for o in cfg.search.objectives], epochs=sched.rungs(cfg.student.epochs),
                     build=lambda: build_model(model.name, model.params, info), data=data, spec=sched,
                     latency=cfg.evaluation.latency, seed=cfg.seed, device=device, costs_file=costs)


class EpochReporter:
    """The trial's ``on_state``: reports an epoch's stats with a checkpoint of the training state once
    ``every_s`` seconds have passed since the last report (0: every epoch), and at every rung epoch of
    ``probe`` with the objectives measured there (``rung/<objective>``, ``rung/epoch``), which the
    early-stopping scheduler ranks.

    A report is a round trip to the driver (Tune holds the trial until the driver has handled it) plus a
    checkpoint on disk, which costs more than a short epoch; skipped epochs ride along with the next
    report under ``EPOCHS_KEY``, so no epoch's metrics are lost.
    """

    def __init__(self, every_s: float, *, probe: RungProbe | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.probe, self.clock = every_s, probe, clock
        self.last = clock()
        self.pending: list[dict[str, float]] = []  # epochs trained since the last report

    def __call__(self, state: FitState) -> None:
        epoch = {**state.history[-1], "epoch": state.epoch}
        at_rung = self.probe is not None and state.epoch in self.probe.epochs
        if not at_rung and self.clock() - self.last < self.every_s:
            self.pending.append(epoch)
            return
        if at_rung:
            epoch.update(self.probe(state))
        with tempfile.TemporaryDirectory() as tmp:
            state.save(Path(tmp) / STATE_FILE)
            tune.report({**epoch, **self.unreported()}, checkpoint=tune.Checkpoint.from_directory(tmp))
        self.last = self.clock()

    def unreported(self) -> dict[str, str]:
        """``{EPOCHS_KEY: json}`` for the epochs not reported yet (and forgets them); {} if none."""
        pending, self.pending = self.pending, []
        return {EPOCHS_KEY: json.dumps(pending)} if pending else {}


def carried_epochs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier epochs a result carries under ``EPOCHS_KEY`` (each with its ``epoch``), oldest first."""
    return json.loads(result.get(EPOCHS_KEY) or "[]")


def resume_state(checkpoint: tune.Checkpoint | None) -> FitState | None:
    """The training state in a trial's latest checkpoint; None for a fresh trial, or when that
    checkpoint is the final one (a worker lost after its final report: the trial is simply re-run)."""
    if checkpoint is None:
        return None
    try:
        with checkpoint.as_directory() as path:
            state_file = Path(path) / STATE_FILE
            return FitState.load(state_file) if state_file.exists() else None
    except Exception as err:  # noqa: BLE001 - e.g. cut short by a kill -9: training is seeded, start over
        log.warning("checkpoint %s is unreadable (%s); the trial restarts from scratch", checkpoint.path, err)
        return None
