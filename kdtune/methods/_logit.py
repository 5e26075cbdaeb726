"""Logit distillation: Hinton soft targets, and the cross-entropy-only baseline."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import Tensor

from kdtune.errors import ConfigError
from kdtune.losses import cross_entropy
from kdtune.methods._base import METHODS, Distiller, MethodContext, SoftTargetKD


class _Hinton(SoftTargetKD):
    def __init__(self, ctx: MethodContext, temperature: float, alpha: float) -> None:
        super().__init__(ctx, temperature=temperature, alpha=alpha)
        if ctx.teacher_logits is None:
            raise ConfigError("method 'hinton' needs a teacher; add a teacher section to the study")

    def targets(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        """The teacher's logits on the clean inputs, even when x is adversarial (ARD): cached per study, or,
        when the recipe augments, computed live on the batch's augmented view (consistent teaching)."""
        return self.teacher_logits(self.ctx.teacher_logits, idx)


@METHODS.register("hinton")
def hinton(
    *,
    ctx: MethodContext,
    temperature: Annotated[float, Field(gt=0)] = 4.0,
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.9,
) -> Distiller:
    """Soft-target KD (Hinton et al. 2015, arXiv:1503.02531): (1-a)·CE + a·T²·KL(p_t^T || p_s^T)."""
    return _Hinton(ctx, temperature, alpha)


class _CrossEntropy(Distiller):
    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        return {"task": cross_entropy(logits, None, y, label_smoothing=self.label_smoothing)}


@METHODS.register("ce")
def ce(*, ctx: MethodContext) -> Distiller:
    """No distillation: the student trained with cross-entropy on the labels alone (the baseline)."""
    return _CrossEntropy(ctx)
