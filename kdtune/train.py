"""Plain training loops: ``fit_teacher`` (cross-entropy) and ``fit_student`` (KD terms + penalties + adversary).

The dataset lives in memory as tensors and is batched by index, so per-batch overhead is just the step.
With adversarial training the student sees ``x_adv`` while the KD targets stay the teacher's logits on
the clean ``x`` (adversarially robust distillation, Goldblum et al. 2020, arXiv:1905.09747); so the
teacher's logits are computed once per study and never recomputed inside a trial.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdtune.errors import TrainingError
from kdtune.evaluate import accuracy

if TYPE_CHECKING:
    from kdtune.config import TrainSpec
    from kdtune.data import Dataset, Split
    from kdtune.methods import Distiller

EpochCallback = Callable[[int, dict[str, float]], None]
# (x, y, idx) -> named loss terms; "loss" is the total to minimize
StepFn = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


@dataclass(frozen=True)
class Penalty:
    """A registered penalty bound to its params, with its weight in the total loss."""

    name: str
    weight: float
    fn: Callable[..., Tensor]


def make_optimizer(params: Iterable[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def fit(
    model: nn.Module,
    data: Dataset,
    spec: TrainSpec,
    step: StepFn,
    *,
    seed: int,
    on_epoch: EpochCallback | None = None,
    train: Split | None = None,
    extra: Iterable[nn.Parameter] = (),
) -> list[dict[str, float]]:
    """Train ``model`` (and ``extra`` parameters) for ``spec.epochs`` with ``step`` over ``train``
    (default: the training split); returns per-epoch means of the terms + val/acc."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(itertools.chain(model.parameters(), extra), spec)
    train, history = train if train is not None else data.train, []
    for epoch in range(1, spec.epochs + 1):
        start, sums, n_batches = time.perf_counter(), defaultdict(float), 0
        model.train()
        for idx in train.index_batches(spec.batch_size, generator=gen):
            terms = step(train.x[idx], train.y[idx], idx)
            _check_finite(terms, epoch, n_batches)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            for k, v in terms.items():
                sums[k] += float(v.detach())
            n_batches += 1
        stats = {f"train/{k}": v / n_batches for k, v in sums.items()}
        stats["val/acc"] = accuracy(model, data.val.x, data.val.y)
        stats["time/epoch_s"] = time.perf_counter() - start
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return history


def _check_finite(terms: dict[str, Tensor], epoch: int, batch: int) -> None:
    values = {k: float(v.detach()) for k, v in terms.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TrainingError(
            f"loss became non-finite at epoch {epoch}, batch {batch} ({shown}); "
            "lower the learning rate or the penalty weights"
        )


def fit_teacher(
    model: nn.Module,
    data: Dataset,
    spec: TrainSpec,
    *,
    seed: int,
    adversary: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Cross-entropy training of a teacher (on ``adversary(model, x, y)`` when given: Madry-style AT)."""

    def step(x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        if adversary is not None:
            x = adversary(model, x, y)
        return {"loss": F.cross_entropy(model(x), y)}

    return fit(model, data, spec, step, seed=seed, on_epoch=on_epoch)


def fit_student(
    student: nn.Module,
    data: Dataset,
    spec: TrainSpec,
    *,
    distiller: Distiller,
    penalties: Sequence[Penalty] = (),
    adversary: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Distil into ``student``: the method's task loss on student(x') + sum_w w * penalty(x').

    The student trains on ``distiller.transfer_set()``; ``x'`` is ``adversary(student, x, y)`` when
    adversarial training is on, else ``x``.
    """
    active = [p for p in penalties if p.weight > 0]
    distiller.attach(student)

    def step(x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        if adversary is not None:
            x = adversary(student, x, y)
        if active:
            x = x.detach().requires_grad_(True)  # penalties differentiate the logits w.r.t. the input
        logits = student(x)
        terms = distiller.terms(logits, x, y, idx)
        total = terms["task"]
        for p in active:
            terms[p.name] = p.fn(student, x, y, logits)
            total = total + p.weight * terms[p.name]
        terms["loss"] = total
        return terms

    return fit(
        student, data, spec, step, seed=seed, on_epoch=on_epoch,
        train=distiller.transfer_set(), extra=distiller.parameters(),
    )


@torch.no_grad()  # not inference_mode: the result is used as a KD target inside autograd
def logits_of(model: nn.Module, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """The model's logits on ``x`` in eval mode, shape (N, K)."""
    model.eval()
    return torch.cat([model(xb) for xb in x.split(batch_size)])
