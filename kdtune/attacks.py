"""ATTACKS: L-infinity evasion attacks ``(model, x, y, *, eps, ...) -> x_adv``.

Inputs are images in pixel space [0, 1] (models normalize internally). Every attack returns a
detached ``x_adv`` in [0, 1] with ``|x_adv - x|_inf <= eps``; it leaves the model's train/eval
mode, its parameters' ``.grad`` and ``x`` untouched (gradients are taken w.r.t. the input only).
Attacks may run under ``torch.no_grad()`` (gradients are re-enabled locally), not under
``torch.inference_mode()``.
"""

# No ``from __future__ import annotations``: the registry reads these annotations at runtime.

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdtune.registry import Registry

ATTACKS = Registry("attack")

Radius = Annotated[float, Field(ge=0)]
StepSize = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]


def _loss_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """d CE(model(x), y) / dx (summed over the batch), without touching parameter grads."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # same shape as x
    return grad


def _project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip into the eps-ball around x, then into [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


@ATTACKS.register("fgsm")
def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: Radius = 0.1) -> Tensor:
    """Fast gradient sign method: one signed-gradient step of size eps.

    x_adv = clip_[0,1](x + eps * sign(grad_x CE(f(x), y))). arXiv:1412.6572.
    """
    x = x.detach()
    return (x + eps * _loss_grad(model, x, y).sign()).clamp(0.0, 1.0)


@ATTACKS.register("pgd")
def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: Radius = 0.1,
    alpha: StepSize | None = None,
    steps: Count = 10,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent: iterated FGSM steps of size alpha, projected onto the eps-ball.

    x_{t+1} = Proj_{B_inf(x, eps) ∩ [0,1]}(x_t + alpha * sign(grad_x CE(f(x_t), y))), x_0 uniform in
    the ball when ``random_start``; alpha None means 2.5 * eps / steps. arXiv:1706.06083.
    """
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x_adv = x.clone()
    if random_start:
        device = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        x_adv = _project(x + eps * (2 * noise - 1), x, eps)
    for _ in range(steps):
        x_adv = _project(x_adv + alpha * _loss_grad(model, x_adv, y).sign(), x, eps)
    return x_adv


__all__ = ["ATTACKS", "fgsm", "pgd"]
