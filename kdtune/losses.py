"""LOSSES: distillation terms ``(student_logits, teacher_logits, labels, *, ...) -> Tensor``.

Every entry returns a scalar, the mean over the batch. Logits are ``(B, K)``, labels ``(B,)``.
The teacher's logits are used as given: run the teacher under ``torch.no_grad()`` when it is
frozen (keeping its graph lets data-free generators backpropagate through the teacher).
"""

# No ``from __future__ import annotations``: the registry reads these annotations at runtime.

from typing import Annotated

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdtune.registry import Registry

LOSSES = Registry("loss")

Temperature = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Smoothing = Annotated[float, Field(ge=0, lt=1)]


@LOSSES.register("ce")
def cross_entropy(
    student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor, *, label_smoothing: Smoothing = 0.0
) -> Tensor:
    """Cross-entropy on the labels, the no-distillation baseline; ``teacher_logits`` is ignored.

    loss = mean_i -sum_k q_ik log softmax(s_i)_k, q = (1-ε)·onehot(y) + ε/K (label smoothing ε, Szegedy et
    al. 2016, arXiv:1512.00567; ε = 0: -log softmax(s_i)[y_i]).
    """
    return F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)


@LOSSES.register("hinton_kd")
def hinton_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    *,
    temperature: Temperature = 4.0,
    alpha: Fraction = 0.9,
    label_smoothing: Smoothing = 0.0,
) -> Tensor:
    """Hinton KD (Hinton et al. 2015, arXiv:1503.02531): soft teacher targets at temperature T plus hard labels.

    loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T)), batch mean;
    T^2 keeps the soft term's gradient scale independent of T. ``labels`` may be None when ``alpha == 1``
    (e.g. an unlabeled transfer set). The CE term takes ``label_smoothing`` (see ``cross_entropy``).
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)  # (B, K)
    soft = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    loss = alpha * t**2 * soft
    if alpha < 1:
        if labels is None:
            raise ValueError("hinton_kd: labels are None but alpha < 1; set alpha: 1.0 for unlabeled data")
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return loss


__all__ = ["LOSSES", "cross_entropy", "hinton_kd"]
