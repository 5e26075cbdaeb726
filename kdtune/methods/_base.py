"""What every distillation method is: a ``Distiller`` built by a registered factory from a context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

from kdtune.losses import hinton_kd
from kdtune.registry import Registry

if TYPE_CHECKING:
    from kdtune.data import AnySplit, Dataset
    from kdtune.spec import TrainSpec

METHODS: Registry = Registry("method", context=("ctx",))


@dataclass(frozen=True)
class MethodContext:
    """What a method may use, prepared once per study by the driver and shipped to each trial.

    ``teacher`` is frozen and in eval mode; ``teacher_logits`` are its logits on the training split,
    in its order (row i is example i), shape (N, K). ``student_spec`` is the study's student section (for methods that pretrain a copy
    of the student); ``cache`` is a directory for expensive per-study artefacts.
    """

    data: Dataset
    teacher: nn.Module | None
    teacher_logits: Tensor | None
    student_spec: TrainSpec
    seed: int
    cache: Path


class Distiller(nn.Module):
    """A KD method bound to its hyperparameters.

    Submodules (e.g. a FitNets regressor) are trained together with the student. The training loop
    calls ``attach(student)`` once, iterates over ``transfer_set()``, and for each batch calls
    ``begin_batch(x, idx)`` with the clean batch (augmented when the recipe augments, never attacked),
    computes ``logits = student(x')`` (x' the adversarial batch under adversarial training, else x) and
    then ``terms(logits, x', y, idx)``: named scalar terms whose ``"task"`` entry is the method's loss
    (penalties are added by the loop). ``idx`` indexes the transfer set; ``clean_inputs()`` is the batch
    a teacher should read.
    """

    # Whether ``terms`` may see logits from a bfloat16 forward pass (cast back to float32): methods that
    # read only the logits. Feature methods compare intermediate activations and stay in float32.
    amp_safe = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__()
        self.ctx = ctx
        # What the student learned from; data-free methods replace this (the report shows it per trial).
        self.provenance: dict[str, Any] = {"transfer_set": "training split", "from_real_data": "training images"}
        self._clean: Tensor | None = None

    @property
    def label_smoothing(self) -> float:
        """The student's ``label_smoothing``: every hard-label cross-entropy term of a method uses it (0 for
        a context without a student spec)."""
        return getattr(self.ctx.student_spec, "label_smoothing", 0.0)

    def attach(self, student: nn.Module) -> None:
        """Hook into the student before training (feature taps); nothing by default."""

    def transfer_set(self) -> AnySplit:
        """The examples the student trains on: the training split unless the method synthesizes its own."""
        return self.ctx.data.train

    def begin_batch(self, x: Tensor, idx: Tensor) -> None:
        """Called by the training loop with each clean batch before the student sees it (kept for
        ``clean_inputs``); override to prepare per-batch targets, calling ``super().begin_batch``."""
        self._clean = x

    def clean_inputs(self) -> Tensor:
        """The current batch as the loop drew it, augmented but never attacked: what a teacher reads, so
        that teacher and student see the same view of each image (Beyer et al. 2022, arXiv:2106.05237)."""
        if self._clean is None:
            raise RuntimeError(f"{type(self).__name__}: clean_inputs() before the training loop's begin_batch()")
        return self._clean

    def teacher_logits(self, cached: Tensor, idx: Tensor) -> Tensor:
        """The teacher's logits for this batch, (B, K): ``cached[idx]`` (computed once on the transfer set's
        clean images), or, when the student's recipe augments (so those are stale), the teacher run live
        on the batch's augmented view (consistent teaching)."""
        augments = getattr(self.ctx.student_spec, "augment", None) is not None
        if augments and self.ctx.teacher is not None:
            with torch.no_grad():
                return self.ctx.teacher(self.clean_inputs())
        return cached[idx]

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    # ---- a method's own inner maximisation (robust distillation, TRADES)

    def perturb(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                steps: int) -> Tensor:
        """The adversarial batch x' this method trains on: its own objective maximised over the L-inf ball
        (``kdtune.attacks.maximize``), in float32, within B_inf(x, eps) ∩ [0,1], detached; the student's mode
        and parameter grads are left as they were. ``fit_student`` calls it, after ``begin_batch`` and
        instead of the study's generic adversary, with the budget of the study's ``adversary.attack``.
        Only methods that override it (``owns_attack``) have one."""
        raise NotImplementedError(f"{type(self).__name__} has no inner maximisation of its own")

    @property
    def owns_attack(self) -> bool:
        """Whether this method brings its own inner maximisation (overrides ``perturb``)."""
        return type(self).perturb is not Distiller.perturb


class SoftTargetKD(Distiller):
    """Hinton KD (arXiv:1503.02531) against per-batch soft targets ``t``, which each family supplies (``targets``).

    loss = (1-a)·CE + a·T²·KL(softmax(t/T) || softmax(s/T)); the CE with the student's label smoothing.
    """

    def __init__(self, ctx: MethodContext, *, temperature: float, alpha: float) -> None:
        super().__init__(ctx)
        self.temperature, self.alpha = temperature, alpha

    def targets(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        """The teacher's logits (or a stand-in) for this batch, shape (B, K)."""
        raise NotImplementedError

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        t = self.targets(x, y, idx)
        return {"task": hinton_kd(logits, t, y, temperature=self.temperature, alpha=self.alpha,
                                  label_smoothing=self.label_smoothing)}


F = TypeVar("F", bound=Callable[..., Distiller])


def owns_attack(factory: F) -> F:
    """Mark a method factory whose ``Distiller`` overrides ``perturb``: a study that uses it must enable an
    adversary (its budget), which ``kdtune.config`` checks at load time (``method_owns_attack``)."""
    factory.owns_attack = True  # type: ignore[attr-defined]
    return factory


def method_owns_attack(name: str) -> bool:
    """Whether the registered method ``name`` trains on adversarial examples of its own making."""
    return name in METHODS and getattr(METHODS.get(name), "owns_attack", False)


def own_attack_problem(name: str, *, disabled: bool = False) -> str:
    """The one line that says a study using method ``name`` (which owns its attack) must enable an adversary."""
    fix = ("set adversary.enabled: true (and do not search it)" if disabled
           else "add adversary: {attack: {name: pgd, eps: 0.1, steps: 10}}")
    return (f"method '{name}' trains on its own adversarial examples: {fix}; the attack's eps, steps and alpha "
            "are its inner maximisation's budget")


def build_method(name: str, params: dict, ctx: MethodContext) -> Distiller:
    """The registered method ``name`` with validated ``params`` for this study's context."""
    return METHODS.build(name, **params, ctx=ctx)
