"""Robust distillation side by side: ARD, RSLAD, IAD, AdaAD, and TRADES as the robust baseline without a teacher.

Each method trains on adversarial examples of its own making (``Distiller.perturb``): its paper's inner
maximisation, PGD on its own objective within the study's budget (``adversary.attack``'s eps, steps and
step size), through ``kdtune.attacks`` (``pgd`` for the CE-based attacks of ARD and IAD, ``maximize`` for
the KL-based ones). The attack runs in float32, in the mode the authors' code uses (eval for TRADES, RSLAD
and AdaAD; train for ARD and IAD), and restores the student's mode afterwards.

KL(p || q) is the per-example divergence averaged over the batch, as the papers write it. The authors'
ARD, RSLAD and AdaAD code average over the B·K entries instead (``nn.KLDivLoss()``'s default): the same
loss scaled by 1/K, i.e. a K-times smaller step at the same learning rate. Hard-label CE terms take the
student's label smoothing, as every method's do. Teacher logits on clean inputs are the study's cached
ones (live on the augmented view when the recipe augments); on adversarial inputs the frozen teacher runs
live.
"""

from __future__ import annotations

import math
import weakref
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdtune.attacks import maximize, pgd
from kdtune.errors import ConfigError
from kdtune.evaluate import in_mode
from kdtune.methods._base import METHODS, Distiller, MethodContext, owns_attack

Fraction = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


def kl_per_example(target_logits: Tensor, logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) for each row: sum_k p_k (log p_k - log q_k), (B, K) -> (B,)."""
    log_p = F.log_softmax(target_logits / temperature, dim=1)  # (B, K)
    log_q = F.log_softmax(logits / temperature, dim=1)  # (B, K)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def trades_loss(natural: Tensor, adversarial: Tensor, labels: Tensor, *, beta: float,
                label_smoothing: float = 0.0) -> Tensor:
    """TRADES (arXiv:1901.08573): CE(f(x), y) + β·KL(f(x) || f(x')), both terms batch means."""
    robust = kl_per_example(natural, adversarial).mean()
    return F.cross_entropy(natural, labels, label_smoothing=label_smoothing) + beta * robust


def ard_loss(adversarial: Tensor, natural: Tensor | None, teacher: Tensor, labels: Tensor, *, alpha: float,
             temperature: float, label_smoothing: float = 0.0) -> Tensor:
    """ARD (arXiv:1905.09747): α·T²·KL(T(x)/T || S(x')/T) + (1-α)·CE(S(x), y); ``natural`` may be None at α = 1."""
    loss = alpha * temperature**2 * kl_per_example(teacher, adversarial, temperature=temperature).mean()
    if alpha < 1:
        if natural is None:
            raise ValueError("ard_loss: natural logits are needed when alpha < 1")
        loss = loss + (1 - alpha) * F.cross_entropy(natural, labels, label_smoothing=label_smoothing)
    return loss


def soft_label_loss(adversarial: Tensor, natural: Tensor | None, teacher_adversarial: Tensor,
                    teacher_natural: Tensor, *, alpha: float) -> Tensor:
    """α·KL(T_a || S(x')) + (1-α)·KL(T(x) || S(x)): RSLAD (T_a = T(x), arXiv:2108.07969) and AdaAD (T_a = T(x'))."""
    loss = alpha * kl_per_example(teacher_adversarial, adversarial).mean()
    if alpha < 1:
        if natural is None:
            raise ValueError("soft_label_loss: natural logits are needed when alpha < 1")
        loss = loss + (1 - alpha) * kl_per_example(teacher_natural, natural).mean()
    return loss


def iad_loss(adversarial: Tensor, natural: Tensor | None, teacher_natural: Tensor, trust: Tensor | None,
             labels: Tensor, *, alpha: float, temperature: float, gamma: float,
             label_smoothing: float = 0.0) -> Tensor:
    """IAD-I: ARD's loss + γ·mean_i (1 - trust_i)·KL(S(x_i) || S(x'_i)), trust_i = P_T(x'_i)[y_i]^β (None: warm-up)."""
    loss = ard_loss(adversarial, natural, teacher_natural, labels, alpha=alpha, temperature=temperature,
                    label_smoothing=label_smoothing)
    if trust is not None:
        if natural is None:
            raise ValueError("iad_loss: natural logits are needed for the introspection term")
        loss = loss + gamma * ((1 - trust) * kl_per_example(natural, adversarial)).mean()  # (B,) -> ()
    return loss


class _Robust(Distiller):
    """Shared plumbing: the student (held weakly, never a submodule), its natural logits, the float32 attack."""

    method = ""
    attack_in_train_mode = False  # the authors' code: eval for TRADES, RSLAD, AdaAD; train for ARD, IAD

    def __init__(self, ctx: MethodContext, *, needs_teacher: bool = True) -> None:
        super().__init__(ctx)
        if needs_teacher and (ctx.teacher is None or ctx.teacher_logits is None):
            raise ConfigError(f"method '{self.method}' needs a teacher; add a teacher section to the study")
        self._student: weakref.ref[nn.Module] | None = None

    def attach(self, student: nn.Module) -> None:
        self._student = weakref.ref(student)

    @property
    def student(self) -> nn.Module:
        student = self._student() if self._student is not None else None
        if student is None:
            raise RuntimeError(f"method '{self.method}': call attach(student) before training")
        return student

    def natural_logits(self) -> Tensor:
        """The student's logits on the clean batch, (B, K), with a graph (its training pass)."""
        return self.student(self.clean_inputs())

    def clean_teacher(self, idx: Tensor) -> Tensor:
        """The teacher's logits on the clean batch, (B, K), without a graph."""
        return self.teacher_logits(self.ctx.teacher_logits, idx)

    def live_teacher(self, x: Tensor) -> Tensor:
        """The frozen teacher's logits on ``x`` (e.g. adversarial inputs), (B, K), without a graph."""
        with torch.no_grad():
            return self.ctx.teacher(x)

    def perturb(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                steps: int) -> Tensor:
        with torch.autocast(x.device.type, enabled=False), in_mode(student, train=self.attack_in_train_mode):
            return self.inner_max(student, x.float(), y, idx, eps=eps, alpha=alpha, steps=steps)

    def inner_max(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                  steps: int) -> Tensor:
        """The paper's inner maximisation (``perturb`` sets the mode and precision around it)."""
        raise NotImplementedError


# ---------------------------------------------------------------- TRADES


class _Trades(_Robust):
    method = "trades"
    amp_safe = False  # KL between two student passes: both in float32

    def __init__(self, ctx: MethodContext, beta: float) -> None:
        super().__init__(ctx, needs_teacher=False)
        self.beta = beta

    def inner_max(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                  steps: int) -> Tensor:
        with torch.no_grad():
            natural = student(x)  # (B, K), the fixed target of the attack
        return maximize(lambda x_: kl_per_example(natural, student(x_)).sum(), x, eps=eps, alpha=alpha,
                        steps=steps, start="normal")

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        natural = self.natural_logits()
        ce = F.cross_entropy(natural, y, label_smoothing=self.label_smoothing)
        robust = kl_per_example(natural, logits).mean()
        return {"task": ce + self.beta * robust, "ce": ce.detach(), "kl_robust": robust.detach()}


@owns_attack
@METHODS.register("trades")
def trades(*, ctx: MethodContext, beta: Positive = 6.0) -> Distiller:
    """TRADES (Zhang et al. 2019, arXiv:1901.08573), no teacher: CE(f(x), y) + β·KL(f(x) || f(x')).

    x' = argmax_{x' ∈ B(x, eps)} KL(f(x) || f(x')) by PGD from x + 0.001·N(0, I). β = 1/λ = 6, the paper's
    CIFAR-10 setting (github.com/yaodongyu/TRADES's train_trades_cifar10.py).
    """
    return _Trades(ctx, beta)


# ---------------------------------------------------------------- ARD


class _Ard(_Robust):
    method = "ard"
    attack_in_train_mode = True

    def __init__(self, ctx: MethodContext, temperature: float, alpha: float) -> None:
        super().__init__(ctx)
        self.temperature, self.alpha = temperature, alpha

    def inner_max(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                  steps: int) -> Tensor:
        return pgd(student, x, y, eps=eps, alpha=alpha, steps=steps)  # CE on the labels, uniform start

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        natural = self.natural_logits() if self.alpha < 1 else None
        loss = ard_loss(logits, natural, self.clean_teacher(idx), y, alpha=self.alpha, temperature=self.temperature,
                        label_smoothing=self.label_smoothing)
        return {"task": loss}


@owns_attack
@METHODS.register("ard")
def ard(*, ctx: MethodContext, temperature: Positive = 30.0, alpha: Fraction = 1.0) -> Distiller:
    """ARD (Goldblum et al. 2020, arXiv:1905.09747): α·T²·KL(T(x)/T || S(x')/T) + (1-α)·CE(S(x), y).

    x' = argmax CE(S(x'), y) by PGD from a uniform start. T = 30, α = 1 as the authors' code
    (github.com/goldblum/AdversariallyRobustDistillation), whose CE term reads S(x) at T = 1, as here.
    """
    return _Ard(ctx, temperature, alpha)


# ---------------------------------------------------------------- RSLAD and AdaAD


class _SoftLabels(_Robust):
    """RSLAD and AdaAD: KL to the teacher's soft labels on adversarial and natural inputs."""

    def __init__(self, ctx: MethodContext, alpha: float) -> None:
        super().__init__(ctx)
        self.alpha = alpha

    def adversarial_target(self, x_adv: Tensor, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        natural = self.natural_logits() if self.alpha < 1 else None
        target = self.adversarial_target(x, idx)
        return {"task": soft_label_loss(logits, natural, target, self.clean_teacher(idx), alpha=self.alpha)}


class _Rslad(_SoftLabels):
    method = "rslad"

    def adversarial_target(self, x_adv: Tensor, idx: Tensor) -> Tensor:
        return self.clean_teacher(idx)  # the robust soft label T(x), also for x'

    def inner_max(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                  steps: int) -> Tensor:
        teacher = self.clean_teacher(idx)  # (B, K)
        return maximize(lambda x_: kl_per_example(teacher, student(x_)).sum(), x, eps=eps, alpha=alpha,
                        steps=steps, start="normal")


@owns_attack
@METHODS.register("rslad")
def rslad(*, ctx: MethodContext, alpha: Fraction = 5 / 6) -> Distiller:
    """RSLAD (Zi et al. 2021, arXiv:2108.07969): α·KL(T(x) || S(x')) + (1-α)·KL(T(x) || S(x)), T = 1.

    x' = argmax KL(T(x) || S(x')) by PGD from x + 0.001·N(0, I); α = 5/6 on the adversarial term and 1/6 on
    the natural one, as the paper and github.com/zibojia/RSLAD.
    """
    return _Rslad(ctx, alpha)


class _AdaAD(_SoftLabels):
    method = "adaad"

    def adversarial_target(self, x_adv: Tensor, idx: Tensor) -> Tensor:
        return self.live_teacher(x_adv.detach())  # T(x'): the teacher queried where the student errs

    def inner_max(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                  steps: int) -> Tensor:
        teacher = self.ctx.teacher  # its parameters are frozen: gradients flow to x' only
        return maximize(lambda x_: kl_per_example(teacher(x_), student(x_)).sum(), x, eps=eps, alpha=alpha,
                        steps=steps, start="normal")


@owns_attack
@METHODS.register("adaad")
def adaad(*, ctx: MethodContext, alpha: Fraction = 1.0) -> Distiller:
    """AdaAD (Huang et al., CVPR 2023, no arXiv version): α·KL(T(x') || S(x')) + (1-α)·KL(T(x) || S(x)).

    x' = argmax KL(T(x') || S(x')), where teacher and student disagree most, by PGD from x + 0.001·N(0, I)
    with the teacher queried live at x'; α = 1 as the authors' code (``AdaAD_alpha``). The issue cites it as
    AAAI 2023; it appeared at CVPR 2023, pp. 24668-24677.
    """
    return _AdaAD(ctx, alpha)


# ---------------------------------------------------------------- IAD


class _Iad(_Robust):
    method = "iad"
    amp_safe = False  # introspection compares two student passes: both in float32
    attack_in_train_mode = True

    def __init__(self, ctx: MethodContext, temperature: float, alpha: float, beta: float, gamma: float,
                 warmup: float) -> None:
        super().__init__(ctx)
        self.temperature, self.alpha, self.beta, self.gamma = temperature, alpha, beta, gamma
        spec = ctx.student_spec
        per_epoch = math.ceil(len(self.transfer_set()) / spec.batch_size)
        self.warmup_steps = math.ceil(warmup * spec.epochs * per_epoch)
        self.register_buffer("n_batches", torch.zeros((), dtype=torch.long))  # saved with every FitState

    def begin_batch(self, x: Tensor, idx: Tensor) -> None:
        super().begin_batch(x, idx)
        self.n_batches += 1

    @property
    def introspects(self) -> bool:
        """Whether the current batch is past the warm-up (the first ``warmup`` share of all training batches)."""
        return int(self.n_batches) > self.warmup_steps

    def inner_max(self, student: nn.Module, x: Tensor, y: Tensor, idx: Tensor, *, eps: float, alpha: float,
                  steps: int) -> Tensor:
        return pgd(student, x, y, eps=eps, alpha=alpha, steps=steps)  # CE on the labels, uniform start (as ARD)

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        trust = None
        if self.introspects:
            p_adv = F.softmax(self.live_teacher(x.detach()), dim=1)  # (B, K)
            trust = p_adv.gather(1, y.unsqueeze(1)).squeeze(1).pow(self.beta)  # (B,)
        natural = self.natural_logits() if self.alpha < 1 or trust is not None else None
        loss = iad_loss(logits, natural, self.clean_teacher(idx), trust, y, alpha=self.alpha,
                        temperature=self.temperature, gamma=self.gamma, label_smoothing=self.label_smoothing)
        return {"task": loss}


@owns_attack
@METHODS.register("iad")
def iad(
    *,
    ctx: MethodContext,
    temperature: Positive = 1.0,
    alpha: Fraction = 1.0,
    beta: Positive = 0.1,
    gamma: NonNegative = 1.0,
    warmup: Fraction = 0.3,
) -> Distiller:
    """IAD-I (Zhu et al., ICLR 2022, arXiv:2106.04928): ARD + γ·(1 - P_T(x'|y)^β)·KL(S(x) || S(x')) after warm-up.

    x' = argmax CE(S(x'), y) by PGD from a uniform start (as ARD); P_T(x'|y) is the teacher's probability of
    the label at x'. The authors' IAD-I defaults (github.com/ZFancy/IAD): T = 1, α = 1, β = 0.1, γ = 1 (their
    ``alpha`` also weights the introspection term), introspection from epoch 60 of 200 (``warmup`` = 0.3 of
    all training batches).
    """
    return _Iad(ctx, temperature, alpha, beta, gamma, warmup)
