"""The training recipe's moving parts for ``kdtune.train``: the per-epoch lr schedule and early stopping.

Schedules are torch's ``lr_scheduler`` classes, stepped once after every epoch (``kdtune.spec.ScheduleSpec``
gives each one's formula). Early stopping keeps a copy of the best epoch's weights and restores it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import lr_scheduler as sched

if TYPE_CHECKING:
    from kdtune.spec import EarlyStoppingSpec, ScheduleSpec, TrainSpec


def make_scheduler(opt: torch.optim.Optimizer, spec: TrainSpec) -> sched.LRScheduler | None:
    """The lr schedule of ``spec.schedule`` over ``spec.epochs`` epochs, stepped once per epoch.

    None for a constant lr without warm-up: the optimizer's lr is then never touched (bit-identical to a
    run without a schedule). A warm-up W > 0 is torch's ``LinearLR`` from lr/(W+1) for W epochs, followed
    by the schedule itself through ``SequentialLR`` (so the schedule's epochs count from W).
    """
    s = spec.schedule
    if s.name == "onecycle":  # its own warm-up: warmup_epochs does not apply
        return sched.OneCycleLR(
            opt, max_lr=s.max_lr or spec.lr, total_steps=spec.epochs, pct_start=s.pct_start,
            anneal_strategy="cos", cycle_momentum=False, div_factor=s.div_factor,
            final_div_factor=s.final_div_factor,
        )  # fmt: skip
    w = s.warmup_epochs
    warmup = sched.LinearLR(opt, start_factor=1 / (w + 1), end_factor=1.0, total_iters=w) if w else None
    main = _after_warmup(opt, s, spec.epochs - w)
    if warmup is None or main is None:
        return warmup or main
    return sched.SequentialLR(opt, [warmup, main], milestones=[w])


def _after_warmup(opt: torch.optim.Optimizer, s: ScheduleSpec, n_epochs: int) -> sched.LRScheduler | None:
    """The schedule that follows the warm-up, over its remaining ``n_epochs``; None for a constant lr."""
    if s.name == "step":
        return sched.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    if s.name == "multistep":
        return sched.MultiStepLR(opt, milestones=s.milestones, gamma=s.gamma)
    if s.name == "exponential":
        return sched.ExponentialLR(opt, gamma=s.gamma)
    if s.name == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=max(1, n_epochs), eta_min=s.min_lr)
    return None  # constant


class EarlyStopping:
    """Stops training once ``spec.metric`` has not improved for ``spec.patience`` epochs.

    Its state (the best value and epoch) is read from the history, so a resumed fit picks it up; only the
    best epoch's weights (``best``: {"epoch", "model", "extra"}) are kept, as copies, and travel in ``FitState``.
    """

    def __init__(self, spec: EarlyStoppingSpec) -> None:
        self.spec = spec
        self.value: float | None = None
        self.epoch = 0  # the best epoch (1-based); 0: none yet
        self.n_epochs = 0  # epochs seen
        self.best: dict[str, Any] = {}

    def improves(self, value: float) -> bool:
        if self.value is None:
            return True
        if self.spec.mode == "max":
            return value > self.value + self.spec.min_delta
        return value < self.value - self.spec.min_delta

    def update(self, stats: dict[str, float], model: nn.Module, extra: nn.Module | None) -> None:
        """Record one epoch's ``stats``; copies the weights when the epoch is the best so far."""
        value = float(stats[self.spec.metric])
        self.n_epochs += 1
        if self.improves(value):
            self.value, self.epoch = value, self.n_epochs
            self.best = {"epoch": self.epoch, "model": copy_state(model), "extra": copy_state(extra)}

    def resume(self, history: list[dict[str, float]], best: dict[str, Any]) -> None:
        """Pick up after ``history`` (the epochs done), with the best weights saved along with it."""
        for stats in history:
            value = float(stats[self.spec.metric])
            self.n_epochs += 1
            if self.improves(value):
                self.value, self.epoch = value, self.n_epochs
        if self.epoch and best.get("epoch") != self.epoch:
            raise ValueError(f"the saved best weights are of epoch {best.get('epoch')}, the history's best is "
                             f"epoch {self.epoch}; resume from a state of the same configuration")
        self.best = best

    @property
    def stopped(self) -> bool:
        return self.n_epochs - self.epoch >= self.spec.patience

    def restore(self, model: nn.Module, extra: nn.Module | None) -> None:
        """Load the best epoch's weights into ``model`` (and ``extra``)."""
        if self.best:
            model.load_state_dict(self.best["model"])
            if extra is not None:
                extra.load_state_dict(self.best["extra"])


def copy_state(module: nn.Module | None) -> dict[str, torch.Tensor]:
    """A copy (not a view) of ``module``'s state_dict; {} for None."""
    return {} if module is None else {k: v.detach().clone() for k, v in module.state_dict().items()}
