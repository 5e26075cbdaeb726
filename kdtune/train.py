"""Plain training loops: ``fit_teacher`` (cross-entropy) and ``fit_student`` (KD terms + penalties + adversary).

Data in memory are batched by index, so per-batch overhead is just the step; a streamed split
(``kdtune.data.StreamedSplit``) delivers batches of the same shape and order from its files.
With adversarial training the student sees ``x_adv`` while the KD targets stay the teacher's logits on
the clean ``x`` (adversarially robust distillation, Goldblum et al. 2020, arXiv:1905.09747): computed
once per study, or live on each (augmented) batch when the student trains with ``augment``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdtune import metrics
from kdtune.augment import augment_batch, check_images
from kdtune.compat.optim import LeanAdam, LeanAdamW, LeanSGD
from kdtune.errors import ConfigError, TrainingError
from kdtune.evaluate import accuracy
from kdtune.recipe import EarlyStopping, copy_state, make_scheduler
from kdtune.spec import OptimizerSpec

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler

    from kdtune.attacks import Budget
    from kdtune.data import AnySplit, Dataset
    from kdtune.spec import TrainSpec

log = logging.getLogger(__name__)


class Distiller(Protocol):
    """What ``fit_student`` drives: a KD method bound to its hyperparameters, an ``nn.Module`` whose own
    parameters (e.g. a FitNets regressor) train with the student (``kdtune.methods.Distiller``)."""

    amp_safe: bool  # whether ``terms`` may see logits of a bfloat16 forward pass

    def attach(self, student: nn.Module) -> None: ...

    def transfer_set(self) -> AnySplit: ...

    def begin_batch(self, x: Tensor, idx: Tensor) -> None: ...

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]: ...

    @property
    def owns_attack(self) -> bool: ...  # whether ``perturb`` is the method's own inner maximisation

    def perturb(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                steps: int) -> Tensor: ...

EpochCallback = Callable[[int, dict[str, float]], None]
StateCallback = Callable[["FitState"], None]
# (x, y, idx) -> named loss terms; "loss" is the total to minimize
StepFn = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


@dataclass(frozen=True)
class Penalty:
    """A registered penalty bound to its params, with its weight in the total loss."""

    name: str
    weight: float
    fn: Callable[..., Tensor]


def make_optimizer(params: Iterable[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """torch's SGD, Adam or AdamW as ``spec.optimizer`` (a name or an ``OptimizerSpec``) sets them, stepped
    as ``kdtune.compat.optim`` steps them (without torch._dynamo); ``spec.weight_decay`` for all three."""
    opt = OptimizerSpec.model_validate(spec.optimizer)
    if opt.name == "sgd":
        return LeanSGD(params, lr=spec.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                       weight_decay=spec.weight_decay)
    adam = LeanAdamW if opt.name == "adamw" else LeanAdam
    return adam(params, lr=spec.lr, betas=opt.betas, weight_decay=spec.weight_decay)


@dataclass(frozen=True)
class FitState:
    """Where ``fit`` stands after ``epoch``: enough to go on as if it had never stopped.

    Tensors and plain Python only, so a saved state loads with ``torch.load(weights_only=True)``.
    ``extra`` is the state of the module trained alongside the model (a distiller's regressor, ...);
    ``generator`` is the batch-shuffling generator's state, ``rng`` torch's global CPU RNG state and
    ``cuda_rng`` that of the training device when it is a GPU (random starts, dropout). ``scheduler`` is the
    lr schedule's state ({} without one) and ``best`` the best epoch's weights under early stopping
    ({"epoch", "model", "extra"}; {} without it).
    """

    epoch: int
    model: dict[str, Tensor]
    extra: dict[str, Tensor]
    optimizer: dict[str, Any]
    generator: Tensor
    rng: Tensor
    cuda_rng: Tensor | None
    history: list[dict[str, float]]
    scheduler: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(cls, epoch: int, model: nn.Module, extra: nn.Module | None, opt: torch.optim.Optimizer,
                gen: torch.Generator, history: list[dict[str, float]], device: torch.device,
                scheduler: LRScheduler | None = None, best: dict[str, Any] | None = None) -> FitState:
        """A snapshot (copies, not views of the live tensors) of the training state after ``epoch``.

        ``best`` (early stopping's copy of the best weights) is kept as given: it is never changed in place.
        """
        return cls(
            epoch=epoch, model=copy_state(model), extra=copy_state(extra),
            optimizer=copy.deepcopy(opt.state_dict()), generator=gen.get_state(), rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            history=[dict(h) for h in history],
            scheduler=copy.deepcopy(scheduler.state_dict()) if scheduler is not None else {}, best=best or {},
        )  # fmt: skip

    def restore(self, model: nn.Module, extra: nn.Module | None, opt: torch.optim.Optimizer,
                gen: torch.Generator, device: torch.device,
                scheduler: LRScheduler | None = None) -> list[dict[str, float]]:
        """Load this state into freshly built training objects; returns the history so far."""
        model.load_state_dict(self.model)
        if extra is not None:
            extra.load_state_dict(self.extra)
        opt.load_state_dict(self.optimizer)
        if scheduler is not None:
            if not self.scheduler:
                raise ValueError("the saved state has no lr schedule; resume from a state of the same configuration")
            scheduler.load_state_dict(self.scheduler)
        gen.set_state(self.generator)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(self.cuda_rng, device)
        return [dict(h) for h in self.history]

    def save(self, path: Path) -> None:
        torch.save({f.name: getattr(self, f.name) for f in fields(self)}, path)

    @classmethod
    def load(cls, path: Path) -> FitState:
        """A state written by ``save``, on the CPU (``load_state_dict`` moves it to the model's device)."""
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def fit(
    model: nn.Module,
    data: Dataset,
    spec: TrainSpec,
    step: StepFn,
    *,
    seed: int,
    on_epoch: EpochCallback | None = None,
    on_state: StateCallback | None = None,
    resume: FitState | None = None,
    train: AnySplit | None = None,
    extra: nn.Module | None = None,
) -> list[dict[str, float]]:
    """The shared training loop: ``spec.epochs`` epochs of ``step`` over ``train``; per-epoch term means,
    ``train/lr`` (the epoch's learning rate) and val/acc.

    Trains ``model`` and the ``extra`` module's parameters with the recipe of ``spec`` (optimizer, lr
    schedule stepped after each epoch, gradient clipping, augmentation, early stopping); ``train`` defaults
    to the training split. With early stopping, the history holds the epochs actually trained and the best
    epoch's weights are restored at the end. ``on_state`` gets a ``FitState`` after every epoch; ``resume``
    (one such state, for the same configuration) continues after its epoch and ends with what an
    uninterrupted run would have.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = itertools.chain(model.parameters(), extra.parameters() if extra is not None else ())
    opt, train = make_optimizer(params, spec), train if train is not None else data.train
    scheduler, device, history, done = make_scheduler(opt, spec), train.device, [], 0
    stopper = EarlyStopping(spec.early_stopping) if spec.early_stopping is not None else None
    if spec.augment is not None:
        check_images(train.input_shape)
    if resume is not None:
        if resume.epoch > spec.epochs:
            raise ValueError(f"cannot resume after epoch {resume.epoch} of a {spec.epochs}-epoch run")
        history, done = resume.restore(model, extra, opt, gen, device, scheduler), resume.epoch
        if stopper is not None:
            stopper.resume(history, resume.best)
    for epoch in range(done + 1, spec.epochs + 1):
        if stopper is not None and stopper.stopped:
            break
        stats = _epoch(model, data, train, spec, step, opt, scheduler, gen, epoch)
        history.append(stats)
        if stopper is not None:
            stopper.update(stats, model, extra)
        if on_epoch is not None:
            on_epoch(epoch, stats)
        if on_state is not None:
            best = stopper.best if stopper is not None else None
            on_state(FitState.capture(epoch, model, extra, opt, gen, history, device, scheduler, best))
    if stopper is not None:
        _stop_early(stopper, model, extra, len(history), spec.epochs)
    return history


def _epoch(model: nn.Module, data: Dataset, train: AnySplit, spec: TrainSpec, step: StepFn,
           opt: torch.optim.Optimizer, scheduler: LRScheduler | None, gen: torch.Generator,
           epoch: int) -> dict[str, float]:
    """One epoch of training, then val/acc; the schedule steps after it."""
    start, lr = time.perf_counter(), float(opt.param_groups[0]["lr"])
    stats = _train_epoch(model, train, spec, step, opt, gen, epoch)
    stats["train/lr"] = lr
    stats[metrics.acc("val")] = accuracy(model, data.val)
    if scheduler is not None:
        scheduler.step()
    stats["time/epoch_s"] = time.perf_counter() - start
    return stats


def _stop_early(stopper: EarlyStopping, model: nn.Module, extra: nn.Module | None, trained: int,
                epochs: int) -> None:
    """Restore the best epoch's weights (early stopping keeps the best, as timm and torchdistill do)."""
    if trained < epochs:
        log.info("early stopping after epoch %d of %d: %s has not improved since epoch %d",
                 trained, epochs, stopper.spec.metric, stopper.epoch)
    stopper.restore(model, extra)


def _train_epoch(model: nn.Module, train: AnySplit, spec: TrainSpec, step: StepFn, opt: torch.optim.Optimizer,
                 gen: torch.Generator, epoch: int) -> dict[str, float]:
    """One pass over ``train`` in the order ``gen`` draws (each batch augmented with ``gen``'s draws when
    ``spec.augment`` is set); the means of the step's terms."""
    sums, n_batches = defaultdict(float), 0
    model.train()
    # Only the optimizer's parameters: a step whose input requires grad (a penalty differentiates the
    # logits w.r.t. it) would otherwise also pay for a gradient of the input nobody reads.
    params = [p for group in opt.param_groups for p in group["params"] if p.requires_grad]
    aug = spec.augment
    for x, y, idx in train.batches(spec.batch_size, generator=gen):
        if aug is not None:
            x = augment_batch(x, crop_padding=aug.crop_padding, hflip=aug.hflip, generator=gen)
        terms = step(x, y, idx)
        _check_finite(terms, epoch, n_batches)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward(inputs=params)
        if spec.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, spec.grad_clip)  # the global L2 norm over all parameters
        opt.step()
        for k, v in terms.items():
            sums[k] += float(v.detach())
        n_batches += 1
    return {f"train/{k}": v / n_batches for k, v in sums.items()}


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
    on_state: StateCallback | None = None,
    resume: FitState | None = None,
) -> list[dict[str, float]]:
    """Cross-entropy training of a teacher: min_θ mean CE(f_θ(x'), y), x' = ``adversary(model, x, y)`` or x.

    With an adversary this is adversarial training (Madry et al. 2017, arXiv:1706.06083). The CE uses
    ``spec.label_smoothing`` (Szegedy et al. 2016, arXiv:1512.00567).
    """

    def step(x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        if adversary is not None:
            x = adversary(model, x, y)
        return {"loss": F.cross_entropy(model(x), y, label_smoothing=spec.label_smoothing)}

    return fit(model, data, spec, step, seed=seed, on_epoch=on_epoch, on_state=on_state, resume=resume)


def fit_student(
    student: nn.Module,
    data: Dataset,
    spec: TrainSpec,
    *,
    distiller: Distiller,
    penalties: Sequence[Penalty] = (),
    adversary: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    budget: Budget | None = None,
    seed: int,
    on_epoch: EpochCallback | None = None,
    on_state: StateCallback | None = None,
    resume: FitState | None = None,
    amp: torch.dtype | None = None,
) -> list[dict[str, float]]:
    """KD training of ``student``: loss = task(student(x'), y) + sum_p w_p * penalty_p(x').

    ``task`` is the method's loss; the student trains on ``distiller.transfer_set()``; ``x'`` is
    ``adversary(student, x, y)`` when adversarial training is on, else ``x``, while the method's targets
    come from the clean ``x`` (ARD, Goldblum et al. 2020, arXiv:1905.09747). A method with its own inner
    maximisation (``distiller.owns_attack``: TRADES, RSLAD, ...) makes ``x'`` itself instead,
    ``distiller.perturb(student, x, y, idx)`` within ``budget`` (required for it). The distiller's state (e.g. a
    FitNets regressor, created by ``attach``) is part of every ``FitState``: ``resume`` restores it after
    ``attach``.

    ``amp`` (e.g. ``torch.bfloat16``) runs the student's forward pass under autocast, the loss on its
    logits cast back to float32, where that is safe (``amp_step``); the adversary always runs in float32.
    """
    active = [p for p in penalties if p.weight > 0]
    own_attack = _own_attack(distiller, budget)  # (student, x, y, idx) -> x', or None
    distiller.attach(student)
    autocast = amp_step(amp, distiller.transfer_set().device, distiller, active)

    def step(x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        distiller.begin_batch(x, idx)  # the clean (augmented, never attacked) batch the teacher reads
        if own_attack is not None:
            x = own_attack(student, x, y, idx)
        elif adversary is not None:
            x = adversary(student, x, y)
        if active:
            x = x.detach().requires_grad_(True)  # penalties differentiate the logits w.r.t. the input
        with autocast():
            logits = student(x)
        terms = distiller.terms(logits.float(), x, y, idx)
        total = terms["task"]
        for p in active:
            terms[p.name] = p.fn(student, x, y, logits)
            total = total + p.weight * terms[p.name]
        terms["loss"] = total
        return terms

    return fit(
        student, data, spec, step, seed=seed, on_epoch=on_epoch, on_state=on_state, resume=resume,
        train=distiller.transfer_set(), extra=distiller,
    )


def _own_attack(distiller: Distiller, budget: Budget | None) -> Callable[..., Tensor] | None:
    """The method's own inner maximisation bound to ``budget``, or None for a method without one."""
    if not getattr(distiller, "owns_attack", False):  # a duck-typed distiller may not say
        return None
    if budget is None:
        name = type(distiller).__name__
        raise ConfigError(f"{name} trains on its own adversarial examples and needs their budget: add adversary: "
                          "{attack: {name: pgd, eps: 0.1, steps: 10}} to the study")
    return functools.partial(distiller.perturb, eps=budget.eps, alpha=budget.alpha, steps=budget.steps)


def amp_step(
    amp: torch.dtype | None, device: torch.device, distiller: Distiller, penalties: Sequence[Penalty]
) -> Callable[[], contextlib.AbstractContextManager]:
    """The context the student's training forward pass runs in: autocast to ``amp`` when asked for and
    safe (the method reads only logits, no penalty differentiates them w.r.t. the input), else none."""
    if amp is None or penalties or not distiller.amp_safe:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=amp)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """``resources.amp`` on ``device``: bfloat16 for "bf16", and for "auto" on a GPU that supports it."""
    if setting == "bf16":
        return torch.bfloat16
    if setting == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
