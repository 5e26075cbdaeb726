"""ATTACKS: L-infinity evasion attacks ``(model, x, y, *, eps, ...) -> x_adv``.

Inputs are images in pixel space [0, 1] (models normalize internally). Every attack returns a
detached ``x_adv`` in [0, 1] with ``|x_adv - x|_inf <= eps``; it leaves the model's train/eval
mode, its parameters' ``.grad`` and ``x`` untouched (gradients are taken w.r.t. the input only).
Attacks may run under ``torch.no_grad()`` (gradients are re-enabled locally), not under
``torch.inference_mode()``.
"""

# No ``from __future__ import annotations``: the registry reads these annotations at runtime.

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdtune.errors import ConfigError
from kdtune.registry import Registry

ATTACKS = Registry("attack")

Radius = Annotated[float, Field(ge=0)]
StepSize = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]


def _input_grad(objective: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """d objective(x) / dx (a scalar objective, e.g. summed over the batch), without touching parameter grads."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)  # a new alias: the caller's tensor keeps requires_grad=False
        (grad,) = torch.autograd.grad(objective(x), x)  # same shape as x
    return grad


def _loss_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """d CE(model(x), y) / dx (summed over the batch), without touching parameter grads."""
    return _input_grad(lambda x_: F.cross_entropy(model(x_), y, reduction="sum"), x)


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
    return maximize(lambda x_: F.cross_entropy(model(x_), y, reduction="sum"), x, eps=eps, alpha=alpha,
                    steps=steps, start="uniform" if random_start else "none", generator=generator)


Start = Literal["uniform", "normal", "none"]


def maximize(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    start: Start = "uniform",
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD ascent on any scalar ``objective(x')`` over the L-inf ball: the loop of ``pgd``, whose objective is CE.

    x_{t+1} = Proj_{B_inf(x, eps) ∩ [0,1]}(x_t + alpha * sign(grad objective(x_t))); x_0 is uniform in the
    ball (``start="uniform"``), x + 0.001·N(0, I) (``"normal"``, TRADES' start, arXiv:1901.08573) or x
    itself, each projected; alpha None means 2.5 * eps / steps. Returns a detached tensor of x's shape.
    """
    x = x.detach()
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    # Projection onto the eps-ball around x intersected with [0, 1]: one clamp per step between per-pixel
    # bounds computed once (clip to the ball, then to [0, 1], gives the same values).
    low, high = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    x_adv = _start(x, eps, start, generator, low, high)
    for _ in range(steps):
        step = _input_grad(objective, x_adv).sign_()
        torch.clamp(x_adv.add_(step, alpha=alpha), low, high, out=x_adv)  # in place: x_adv is this attack's own
    return x_adv


def _start(x: Tensor, eps: float, start: Start, generator: torch.Generator | None, low: Tensor,
           high: Tensor) -> Tensor:
    """The first iterate, drawn from ``generator`` (else torch's global RNG) on its device, then moved to x's."""
    if start == "none":
        return x.clone()
    device = generator.device if generator is not None else x.device
    if start == "uniform":
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        return torch.clamp(x + eps * (2 * noise - 1), low, high)
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return torch.clamp(x + 0.001 * noise, low, high)


@dataclass(frozen=True)
class Budget:
    """What a method's own inner maximisation may spend: L-inf radius ``eps``, step size ``alpha``, ``steps``."""

    eps: float
    alpha: float
    steps: int

    @classmethod
    def of(cls, name: str, params: Mapping[str, Any]) -> "Budget":
        """The budget of the study's ``adversary.attack``: pgd's eps, steps and alpha (None: 2.5·eps/steps);
        fgsm is one step of size eps. Any other attack raises ``ConfigError``."""
        if name not in ("pgd", "fgsm"):
            raise ConfigError(f"adversary.attack: a method with its own inner maximisation takes its eps, steps and "
                              f"alpha from a pgd (or fgsm) attack, not '{name}'; set adversary.attack.name: pgd")
        p = ATTACKS.validate(name, params)
        if name == "fgsm":
            return cls(eps=p["eps"], alpha=p["eps"], steps=1)
        return cls(eps=p["eps"], alpha=2.5 * p["eps"] / p["steps"] if p["alpha"] is None else p["alpha"],
                   steps=p["steps"])


__all__ = ["ATTACKS", "Budget", "fgsm", "maximize", "pgd"]
