"""Cheap measurements of a study's objectives at an early-stopping rung (``search.scheduler: moasha``).

At a rung the scheduler ranks trials by their objectives as measured there (``kdtune.sweep``); the final
protocol (PGD with ``evaluation.pgd_steps`` steps on the whole validation split, the full latency protocol)
would cost about as much as the epochs it saves, so a rung measures:

- ``val/acc``: the epoch's own, on the whole validation split (the training loop measures it anyway);
- ``val/robust_acc@eps`` / ``val/fgsm_acc@eps``: on the first ``rung_subset`` validation images only, PGD
  with ``rung_pgd_steps`` steps, its random start drawn from a generator seeded with the study's seed;
- ``latency/ms_b<batch>`` and ``model/*``: once per architecture (``costs_file``: trials of the same
  architecture on the same host and device share one measurement through the study's cache, so they are
  ranked on accuracy alone between them), latency with the study's protocol cut to at most
  ``RUNG_LATENCY_REPEATS`` repeats and only the batch sizes the objectives name.

Nothing here touches the training's random streams (``torch.random.fork_rng``): a trial trains the same
with or without rungs, and resumes from a checkpoint to the same result.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from kdtune import attacks, metrics
from kdtune.cache import cached
from kdtune.evaluate import correct, model_costs, robust_accuracy
from kdtune.latency import measure_latency

if TYPE_CHECKING:
    from kdtune.data import Dataset
    from kdtune.spec import LatencySpec, MoashaSchedulerSpec, ModelSpec
    from kdtune.train import FitState

RUNG_LATENCY_REPEATS = 3


class RungProbe:
    """Measures ``objectives`` cheaply on the student of a ``FitState`` at each of its ``epochs`` (rungs).

    ``build`` makes a fresh student of the trial's architecture, into which each state's weights are loaded
    (the training's own student is never touched). ``costs_file`` is where the architecture's latency and
    size are kept for every trial of it (None: measured once per trial).
    """

    def __init__(self, objectives: Sequence[str], *, epochs: Sequence[int], build: Callable[[], nn.Module],
                 data: Dataset, spec: MoashaSchedulerSpec, latency: LatencySpec, seed: int,
                 device: torch.device, costs_file: Path | None = None) -> None:
        self.objectives, self.epochs = list(objectives), frozenset(epochs)
        self.build, self.data, self.spec, self.seed, self.device = build, data, spec, seed, device
        self.costs_file = costs_file
        batches = [b for name in self.objectives if (b := metrics.latency_batch(name)) is not None]
        self.latency = latency.model_copy(update={"batch_sizes": sorted(set(batches)),
                                                  "repeats": min(RUNG_LATENCY_REPEATS, latency.repeats)})
        self.student: nn.Module | None = None
        self.costs: dict[str, float] | None = None  # measured at the first rung

    def __call__(self, state: FitState) -> dict[str, float]:
        """``{rung/<objective>: value, ..., rung/epoch: epoch}`` for the student after ``state.epoch``."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # building a model draws its initial weights, too
            if self.student is None:
                self.student = self.build().to(self.device).eval()
            self.student.load_state_dict(state.model)
            measured = {**self._costs(), **self._accuracies(state)}
        return {**{metrics.at_rung(name): measured[name] for name in self.objectives},
                metrics.RUNG_EPOCH: float(state.epoch)}

    def _accuracies(self, state: FitState) -> dict[str, float]:
        wanted = [metrics.Metric.parse(name) for name in self.objectives]
        out = {metrics.acc("val"): float(state.history[-1][metrics.acc("val")])}
        attacked = [m for m in wanted if m.group == "val" and m.kind in metrics.RUNG_ATTACKS]
        if not attacked:
            return out
        head = self.data.val.head(self.spec.rung_subset)
        right = correct(self.student, head.x, head.y)
        gen = torch.Generator(device=head.x.device).manual_seed(self.seed)
        for m in attacked:
            pgd = metrics.RUNG_ATTACKS[m.kind] == "pgd"
            attack = (partial(attacks.pgd, eps=m.eps, steps=self.spec.rung_pgd_steps, generator=gen) if pgd
                      else partial(attacks.fgsm, eps=m.eps))
            out[str(m)] = robust_accuracy(self.student, head.x, head.y, attack, right=right)
        return out

    def _costs(self) -> dict[str, float]:
        if self.costs is None:
            if self.costs_file is None:
                self.costs = self._measure_costs()
            else:
                self.costs, _ = cached(self.costs_file, self._measure_costs, what="an architecture's rung costs")
        return self.costs

    def _measure_costs(self) -> dict[str, float]:
        costs = model_costs(self.student, self.data.input_shape)
        if self.latency.batch_sizes:
            costs.update(measure_latency({"student": self.student}, self.data.input_shape, self.latency,
                                         device=self.device)["student"])
        return costs


def costs_file(cache: Path, *, study: str, model: ModelSpec, input_shape: Sequence[int], latency: LatencySpec,
               device: torch.device) -> Path:
    """Where the rung costs of ``model`` are kept for a study's trials: one file per architecture, latency
    protocol, host and device type (latency is the host's and device's own)."""
    key = json.dumps({"study": study, "model": model.name, "params": model.params, "input": list(input_shape),
                      "latency": latency.model_dump(mode="json"), "host": socket.gethostname(),
                      "device": device.type}, sort_keys=True, default=str)
    return cache / "rung_costs" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def rung_accuracy_note(spec: MoashaSchedulerSpec) -> str:
    """How a rung measures robust accuracy, for the report."""
    return (f"robust accuracy at a rung: PGD-{spec.rung_pgd_steps} (FGSM for fgsm objectives) on the first "
            f"{spec.rung_subset} validation images; clean accuracy on the whole validation split; latency and "
            f"size once per architecture (latency with at most {RUNG_LATENCY_REPEATS} repeats)")


__all__ = ["RUNG_LATENCY_REPEATS", "RungProbe", "costs_file", "rung_accuracy_note"]
