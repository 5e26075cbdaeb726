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
        x = x.detach().requires_grad_(True)  # a new alias: the caller's tensor keeps requires_grad=False
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # same shape as x
    return grad


@ATTACKS.register("fgsm")
def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: Radius = 0.1) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2014, arXiv:1412.6572): one signed-gradient step of size eps.

    x_adv = clip_[0,1](x + eps * sign(grad_x CE(f(x), y))).
    """
    x = x.detach()
    return _loss_grad(model, x, y).sign_().mul_(eps).add_(x).clamp_(0.0, 1.0)  # in place on the fresh gradient


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
    """Projected gradient descent (Madry et al. 2017, arXiv:1706.06083): iterated FGSM steps within the eps-ball.

    x_{t+1} = Proj_{B_inf(x, eps) ∩ [0,1]}(x_t + alpha * sign(grad_x CE(f(x_t), y))), x_0 uniform in
    the ball when ``random_start``; alpha None means 2.5 * eps / steps.
    """
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    # Projection onto the eps-ball around x intersected with [0, 1]: one clamp per step between per-pixel
    # bounds computed once (clip to the ball, then to [0, 1], gives the same values).
    low, high = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    x_adv = x.clone()
    if random_start:
        device = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        x_adv = torch.clamp(x + eps * (2 * noise - 1), low, high)
    for _ in range(steps):
        step = _loss_grad(model, x_adv, y).sign_()
        torch.clamp(x_adv.add_(step, alpha=alpha), low, high, out=x_adv)  # in place: x_adv is this attack's own
    return x_adv


__all__ = ["ATTACKS", "fgsm", "pgd"]
