"""Feature distillation: pull a hidden representation of the student towards the teacher's.

Layers are picked by name (``FeatureTap``); ``"auto"`` is the penultimate representation, the input of
each model's last ``nn.Linear``. Teacher features are read live, per batch, from the frozen teacher on
the clean inputs (as ``hinton``'s targets: under adversarial training the student sees ``x_adv``).
"""

from __future__ import annotations

import math
import weakref
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdtune.errors import ConfigError
from kdtune.evaluate import eval_mode
from kdtune.methods._base import METHODS, Distiller, MethodContext
from kdtune.methods._taps import AUTO, FeatureTap, resolve_layer

Fraction = Annotated[float, Field(ge=0, le=1)]


def pool_to_common_size(h_s: Tensor, h_t: Tensor) -> tuple[Tensor, Tensor]:
    """Both flattened to (B, D), the longer average-pooled down to the shorter's D.

    As the PyTorch KD tutorial's ``avg_pool1d(h, 2)`` (2048 -> 1024), generalized with adaptive pooling to
    any pair of sizes; parameter-free, so the cosine term compares the representations themselves.
    """
    h_s, h_t = h_s.flatten(1), h_t.flatten(1)  # (B, D_s), (B, D_t)
    d = min(h_s.shape[1], h_t.shape[1])
    return _pool1d(h_s, d), _pool1d(h_t, d)


def _pool1d(h: Tensor, d: int) -> Tensor:
    if h.shape[1] == d:
        return h
    return F.adaptive_avg_pool1d(h.unsqueeze(1), d).squeeze(1)  # (B, 1, D) -> (B, 1, d) -> (B, d)


def cosine_distance(h_s: Tensor, h_t: Tensor) -> Tensor:
    """mean_i (1 - cos(h_s[i], h_t[i])) over (B, D) rows: ``CosineEmbeddingLoss`` with target +1."""
    return (1 - F.cosine_similarity(h_s, h_t, dim=1)).mean()


class _FeatureKD(Distiller):
    """Shared plumbing: a student tap hooked in ``attach``, teacher features read per batch."""

    method = ""
    amp_safe = False  # the loss compares activations: float32 only

    def __init__(self, ctx: MethodContext, weight: float, teacher_layer: str, student_layer: str) -> None:
        super().__init__(ctx)
        if ctx.teacher is None:
            raise ConfigError(f"method '{self.method}' needs a teacher; add a teacher section to the study")
        resolve_layer(ctx.teacher, teacher_layer, what=self._what("teacher_layer"))  # fail before training
        self.weight, self.teacher_layer, self.student_layer = weight, teacher_layer, student_layer
        self._tap: FeatureTap | None = None

    def _what(self, param: str) -> str:
        return f"method '{self.method}': {param}"

    def attach(self, student: nn.Module) -> None:
        if self._tap is not None:
            self._tap.remove()
        self._tap = FeatureTap(student, self.student_layer, what=self._what("student_layer"))
        # The hook lives as long as this distiller, not as long as the student (no overhead at latency time).
        weakref.finalize(self, self._tap.remove)

    def student_features(self) -> Tensor:
        """The student's tapped features from its latest forward (the one that made ``logits``)."""
        if self._tap is None:
            raise RuntimeError(f"method '{self.method}': call attach(student) before terms()")
        return self._tap.features

    def teacher_features(self, x: Tensor) -> Tensor:
        """The frozen teacher's tapped features on ``x``, without a graph."""
        teacher = self.ctx.teacher
        with torch.no_grad(), FeatureTap(teacher, self.teacher_layer, what=self._what("teacher_layer")) as tap:
            teacher(x)
        return tap.features


class _Cosine(_FeatureKD):
    method = "cosine"

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        h_s, h_t = pool_to_common_size(self.student_features(), self.teacher_features(self.clean_inputs()))
        ce, cos = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), cosine_distance(h_s, h_t)
        return {"task": (1 - self.weight) * ce + self.weight * cos, "ce": ce.detach(), "cosine": cos.detach()}


@METHODS.register("cosine")
def cosine(
    *,
    ctx: MethodContext,
    weight: Fraction = 0.25,
    teacher_layer: str = AUTO,
    student_layer: str = AUTO,
) -> Distiller:
    """Hidden-state cosine KD (PyTorch KD tutorial): (1-w)·CE + w·mean(1 - cos(pool(h_s), pool(h_t))).

    Features are flattened; the longer one is average-pooled to the shorter's size (no parameters).
    """
    return _Cosine(ctx, weight, teacher_layer, student_layer)


def make_regressor(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """1x1 conv C_s -> C_t for two (B, C, H, W) maps, else a Linear on the flattened features."""
    if len(student_shape) == 4 and len(teacher_shape) == 4:
        return nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1)
    return nn.Linear(math.prod(student_shape[1:]), math.prod(teacher_shape[1:]))


class _FitNets(_FeatureKD):
    method = "fitnets"

    def __init__(self, ctx: MethodContext, weight: float, teacher_layer: str, student_layer: str) -> None:
        super().__init__(ctx, weight, teacher_layer, student_layer)
        self.regressor: nn.Module | None = None

    def attach(self, student: nn.Module) -> None:
        """Hook the student, then size the regressor from a dry run, so the optimizer sees its parameters."""
        super().attach(student)
        x = self.transfer_set().head(2).x
        with torch.no_grad(), eval_mode(student):  # eval: no BatchNorm statistics updated
            student(x)
        h_s, h_t = self.student_features(), self.teacher_features(x)
        self.regressor = make_regressor(h_s.shape, h_t.shape).to(h_s.device)
        self._tap.clear()

    def hint_pair(self, h_s: Tensor, h_t: Tensor) -> tuple[Tensor, Tensor]:
        """(regressor(h_s), h_t) with equal shapes: (B, C_t, H_s, W_s) maps or (B, D_t) vectors."""
        if self.regressor is None:
            raise RuntimeError("method 'fitnets': call attach(student) before terms()")
        if isinstance(self.regressor, nn.Conv2d):
            if h_t.shape[-2:] != h_s.shape[-2:]:
                h_t = F.adaptive_avg_pool2d(h_t, h_s.shape[-2:])  # (B, C_t, H_t, W_t) -> (B, C_t, H_s, W_s)
            return self.regressor(h_s), h_t
        return self.regressor(h_s.flatten(1)), h_t.flatten(1)  # (B, D_t), (B, D_t)

    def terms(self, logits: Tensor, x: Tensor, y: Tensor, idx: Tensor) -> dict[str, Tensor]:
        pred, target = self.hint_pair(self.student_features(), self.teacher_features(self.clean_inputs()))
        ce, hint = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), F.mse_loss(pred, target)
        return {"task": (1 - self.weight) * ce + self.weight * hint, "ce": ce.detach(), "hint": hint.detach()}


@METHODS.register("fitnets")
def fitnets(
    *,
    ctx: MethodContext,
    weight: Fraction = 0.25,
    teacher_layer: str = AUTO,
    student_layer: str = AUTO,
) -> Distiller:
    """FitNets hints (Romero et al. 2014, arXiv:1412.6550): (1-w)·CE + w·MSE(r(h_s), h_t), r trained too.

    r is a 1x1 conv for (B, C, H, W) maps (teacher map pooled to the student's H, W), else a Linear.
    Trained jointly with CE in one stage, as the PyTorch KD tutorial does (the paper pretrains with hints first).
    """
    return _FitNets(ctx, weight, teacher_layer, student_layer)
