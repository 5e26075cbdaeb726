"""PENALTIES: smoothness regularizers ``(model, x, y, logits, *, ...) -> Tensor``.

Calling convention: the caller sets ``x.requires_grad_(True)`` *before* ``logits = model(x)``,
so a penalty can differentiate ``logits`` (B, K) with respect to ``x`` (B, ...) without another
forward pass. A penalty that needs extra forward passes calls ``model`` itself, in the model's
current train/eval mode. Every entry returns a scalar (batch mean) built with
``create_graph=True``, so ``(loss + weight * penalty).backward()`` reaches the parameters.
Per-sample quantities assume the model does not mix samples (no BatchNorm in training mode).

``jacobian_norm`` is the evaluation-time metric (exact, per sample, no graph kept).
"""

# No ``from __future__ import annotations``: the registry reads these annotations at runtime.

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdtune.errors import ConfigError
from kdtune.registry import Registry

PENALTIES = Registry("penalty")

Count = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0)]


def _require_input_grad(x: Tensor) -> None:
    if not x.requires_grad:
        raise ValueError("penalty: call x.requires_grad_(True) before logits = model(x)")


def _input_grad(output: Tensor, x: Tensor, weights: Tensor | None = None, *, create_graph: bool = True) -> Tensor:
    """d(sum(weights * output))/dx flattened per sample: (B, D); ``weights`` None means all ones.

    The weights go in as the backward's ``grad_outputs`` rather than through a product and a sum in
    the graph, so the penalty's own backward has two fewer nodes to differentiate. Without weights the
    output is summed instead: the first ``autograd.grad`` given ``grad_outputs`` imports ``torch.fx``'s
    symbolic shapes (sympy), which a plain-KD trial process otherwise never loads (docs/performance.md)."""
    target, grad_outputs = (output.sum(), None) if weights is None else (output, weights.detach())
    (g,) = torch.autograd.grad(target, x, grad_outputs=grad_outputs, create_graph=create_graph, retain_graph=True)
    return g.flatten(1)  # (B, D)


def _mean_sq_norm(rows: Tensor) -> Tensor:
    """Batch mean of the per-row squared norms, mean_i ||rows_i||^2, as one norm of the whole (B, D)
    tensor: its backward is a single scaling of ``rows`` (``pow(2).sum(1).mean()`` takes three
    elementwise passes over it)."""
    return torch.linalg.vector_norm(rows).square() / rows.shape[0]


def _exact_sq_frobenius(logits: Tensor, x: Tensor, *, create_graph: bool) -> Tensor:
    """Per-sample ||d logits_i / d x_i||_F^2, one backward per class: (B,)."""
    total = logits.new_zeros(logits.shape[0])  # (B,)
    for k in range(logits.shape[1]):
        row = _input_grad(logits[:, k], x, create_graph=create_graph)  # (B, D) = J[:, k, :]
        total = total + row.pow(2).sum(dim=1)
    return total


@PENALTIES.register("jacobian")
def jacobian(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    logits: Tensor,
    *,
    estimator: Literal["projection", "exact"] = "projection",
    n_projections: Count = 1,
) -> Tensor:
    """Jacobian regularization (Hoffman et al. 2019, arXiv:1908.02729): batch mean of ||d logits / d x||_F^2.

    ||J||_F^2 = K * E_v ||v^T J||^2 with v uniform on the unit sphere of R^K ("projection": the paper's
    random-projection estimator, one backward per projection); "exact" takes one backward per class.
    """
    _require_input_grad(x)
    if estimator == "exact":
        return _exact_sq_frobenius(logits, x, create_graph=True).mean()
    n_classes = logits.shape[1]
    total = logits.new_zeros(())
    for _ in range(n_projections):
        v = torch.randn_like(logits)  # (B, K)
        v = v / v.norm(dim=1, keepdim=True)  # one unit vector per sample
        vjp = _input_grad(logits, x, v)  # (B, D) = v_i^T J_i
        total = total + n_classes * _mean_sq_norm(vjp)
    return total / n_projections


def _rademacher(like: Tensor) -> Tensor:
    return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1


def _hutchinson(x: Tensor, y: Tensor, logits: Tensor, n_samples: int) -> Tensor:
    """Mean over v of ||H v||^2, H = d^2 CE(logits_i, y_i) / dx_i^2 per sample."""
    grad = _input_grad(F.cross_entropy(logits, y, reduction="sum"), x)  # (B, D): per-sample CE gradients
    total = logits.new_zeros(())
    for _ in range(n_samples):
        v = _rademacher(grad)  # (B, D), entries +-1
        hv = _input_grad(grad, x, v)  # (B, D) = H_i v_i
        total = total + _mean_sq_norm(hv)
    return total / n_samples


def _finite_difference(model: nn.Module, x: Tensor, logits: Tensor, n_samples: int, eps: float) -> Tensor:
    """Mean over the batch of max over logits of Var_v (v^T H v), central differences."""
    v = _rademacher(x.expand(n_samples, *x.shape))  # (N, B, ...)
    steps = eps * v
    shifted = torch.cat([x + steps, x - steps]).flatten(0, 1)  # (2N*B, ...)
    out = model(shifted).unflatten(0, (2, n_samples, x.shape[0]))  # (2, N, B, K)
    second = (out[0] - 2 * logits + out[1]) / eps**2  # (N, B, K) = v^T H v per logit
    return second.var(dim=0).amax(dim=1).mean()  # Var over v: (B, K) -> max over K -> mean


def _check_hessian(params: dict[str, Any]) -> None:
    """Load-time check: the finite-difference variance needs at least two directions."""
    n_samples = params.get("n_samples")
    if params.get("estimator") == "finite_difference" and n_samples is not None and n_samples < 2:
        raise ConfigError(
            f"penalty 'hessian': estimator finite_difference needs n_samples >= 2 for a variance"
            f" (got {n_samples}); set n_samples to 2 or more, or leave it unset"
        )


@PENALTIES.register("hessian", check=_check_hessian)
def hessian(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    logits: Tensor,
    *,
    estimator: Literal["hutchinson", "finite_difference"] = "hutchinson",
    n_samples: Count | None = None,
    fd_eps: Positive = 0.1,
) -> Tensor:
    """Input-Hessian penalty, batch mean: Hutchinson's ||d^2 CE/dx^2||_F^2 or Peebles et al.'s (arXiv:2008.10599).

    "hutchinson" (Hutchinson 1989 trace estimator): ||H v||^2 with Rademacher v and H = d^2 CE(logits, y)/dx^2,
    so E||Hv||^2 = tr(H^T H) = ||H||_F^2 (double backprop; ``y`` None uses the model's own argmax).
    "finite_difference" (Hessian penalty, Peebles et al. 2020, arXiv:2008.10599):
    max_k Var_v[(f_k(x+eps v) - 2 f_k(x) + f_k(x-eps v)) / eps^2] on the logits f.
    A ReLU MLP is piecewise linear, so its logit Hessian is zero almost everywhere and the
    finite-difference penalty is non-zero only across activation kinks; the CE Hessian is
    non-zero through the softmax, hence "hutchinson" is the default. ``n_samples`` (None: 1
    for hutchinson, 2 for finite_difference) counts directions v.
    """
    _require_input_grad(x)
    _check_hessian({"estimator": estimator, "n_samples": n_samples})  # direct callers skip the registry
    if estimator == "finite_difference":
        return _finite_difference(model, x, logits, 2 if n_samples is None else n_samples, fd_eps)
    targets = logits.argmax(dim=1).detach() if y is None else y
    return _hutchinson(x, targets, logits, 1 if n_samples is None else n_samples)


def jacobian_norm(model: nn.Module, x: Tensor) -> Tensor:
    """Exact per-sample Frobenius norm of the input-Jacobian of the logits: (B,), detached.

    ||J_i||_F = sqrt(sum_k ||d logits_ik / d x_i||^2). The model runs in its current mode;
    no ``.grad`` is written to its parameters.
    """
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)  # (B, K)
        return _exact_sq_frobenius(logits, x, create_graph=False).sqrt().detach()


__all__ = ["PENALTIES", "hessian", "jacobian", "jacobian_norm"]
