"""KD without a stronger teacher (Yuan et al. 2020, arXiv:1909.11723): KD as learned label smoothing.

``tfkd_reg`` distils from a hand-made virtual teacher, ``tfkd_self`` from a CE-pretrained copy of the
student, ``reversed`` (Re-KD) from a weaker model. The helper models are trained once and cached on disk
like the study's teacher (key: their training spec, the data and the seed), so trials share them.
Their logits are computed live per batch on the clean inputs: the study's cached ``teacher_logits``
belong to the study's own teacher. Defaults are the authors' configs (github.com/yuanli2333/
Teacher-free-Knowledge-Distillation); the KL is the batch mean, as in ``hinton_kd``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import Tensor

from kdtune.methods._base import METHODS, Distiller, MethodContext, SoftTargetKD
from kdtune.spec import ModelSpec, TrainSpec
from kdtune.teacher import Teacher, frozen, load_or_train_teacher

log = logging.getLogger(__name__)

Temperature = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
CorrectProb = Annotated[float, Field(ge=0.9, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]


def virtual_teacher(labels: Tensor, n_classes: int, *, a: float) -> Tensor:
    """Tf-KD_reg's p^d: ``a`` on the correct class, (1-a)/(K-1) on each other; (B, K), rows sum to 1."""
    p = torch.full((len(labels), n_classes), (1 - a) / (n_classes - 1), device=labels.device)  # (B, K)
    return p.scatter_(1, labels.unsqueeze(1), a)


class _VirtualTeacher(SoftTargetKD):
    def __init__(self, ctx: MethodContext, a: float, temperature: float, alpha: float) -> None:
        super().__init__(ctx, temperature=temperature, alpha=alpha)
        self.a = a

    def targets(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        return virtual_teacher(y, self.ctx.data.n_classes, a=self.a)  # (B, K), used as logits: softmax(p^d / T)


@METHODS.register("tfkd_reg")
def tfkd_reg(
    *,
    ctx: MethodContext,
    a: CorrectProb = 0.99,
    temperature: Temperature = 20.0,
    alpha: Fraction = 0.9,
) -> Distiller:
    """Tf-KD_reg (Yuan et al. 2020, arXiv:1909.11723): KD from a hand-made virtual teacher p^d, no teacher model.

    (1-α)·CE + α·T²·KL(softmax(p^d/T) || softmax(s/T)), p^d = a on y and (1-a)/(K-1) elsewhere.
    The authors' code compares p^d/T with the student at T=1; here both sides use T, as in KD.
    """
    return _VirtualTeacher(ctx, a, temperature, alpha)


class _LiveTeacherKD(SoftTargetKD):
    """Hinton KD from a helper model (not a submodule: it is frozen and never in the optimizer)."""

    def __init__(self, ctx: MethodContext, helper: Teacher, temperature: float, alpha: float) -> None:
        super().__init__(ctx, temperature=temperature, alpha=alpha)
        frozen(helper.model, ctx.data.train.device)
        self.helper = helper

    def targets(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        with torch.no_grad():  # from the clean inputs, as hinton's (x may be adversarial)
            return self.helper.model(self.clean_inputs())  # (B, K)


def _train_helper(ctx: MethodContext, spec: Any, what: str) -> Teacher:
    helper = load_or_train_teacher(spec, ctx.data, seed=ctx.seed, root=ctx.cache, role="student")
    log.info("%s: %s helper model %s (%s)", what, "loaded" if helper.from_cache else "trained",
             spec.model.name, helper.path)  # fmt: skip
    return helper


@METHODS.register("tfkd_self")
def tfkd_self(
    *,
    ctx: MethodContext,
    temperature: Temperature = 6.0,
    alpha: Fraction = 0.95,
) -> Distiller:
    """Tf-KD_self (Yuan et al. 2020, arXiv:1909.11723): Hinton KD from a CE-pretrained copy of the student.

    (1-α)·CE + α·T²·KL(p_self^T || p_s^T); the copy has the student's spec and seed. T=6, α=0.95 as the
    authors' ResNet-18 self-teacher config.
    """
    return _LiveTeacherKD(ctx, _train_helper(ctx, ctx.student_spec, "tfkd_self"), temperature, alpha)


@METHODS.register("reversed")
def reversed_kd(
    *,
    ctx: MethodContext,
    teacher_model: ModelSpec = ModelSpec(name="mlp", params={"hidden": [32]}),
    teacher_epochs: PositiveInt = 5,
    temperature: Temperature = 20.0,
    alpha: Fraction = 0.6,
) -> Distiller:
    """Re-KD (Yuan et al. 2020, arXiv:1909.11723): a weaker, CE-trained ``teacher_model`` teaches by Hinton KD.

    The weak teacher trains for ``teacher_epochs`` with the student's optimizer settings; T=20, α=0.6 as
    the authors' weak-teacher configs (MobileNetV2/ShuffleNetV2 -> ResNet-18).
    """
    student = {k: v for k, v in ctx.student_spec.model_dump().items() if k in TrainSpec.model_fields}
    spec = TrainSpec.model_validate({**student, "model": teacher_model, "epochs": teacher_epochs})
    return _LiveTeacherKD(ctx, _train_helper(ctx, spec, "reversed"), temperature, alpha)
