"""Metrics of a trained classifier: clean and robust accuracy, parameters, FLOPs, bytes, Jacobian norm.

Metric names come from ``kdtune.metrics``: ``val/acc``, ``test/robust_acc@0.1`` (PGD),
``val/fgsm_acc@0.1``, ``model/params``, ``model/flops``, ``model/bytes``, ``jacobian/norm`` (on test images).
Latency has its own protocol: ``kdtune.latency``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kdtune import attacks, metrics
from kdtune.models import n_params
from kdtune.penalties import jacobian_norm

if TYPE_CHECKING:
    from kdtune.data import AnySplit, Dataset
    from kdtune.spec import EvaluationSpec

@contextmanager
def in_mode(model: nn.Module, *, train: bool) -> Iterator[nn.Module]:
    """Temporarily put ``model`` (every submodule) in train or eval mode, restoring each module's own mode after."""
    before = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for m, training in before:
            m.training = training


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Temporarily put ``model`` in eval mode, restoring its previous mode afterwards."""
    return in_mode(model, train=False)


def correct(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1000) -> Tensor:
    """Whether ``model`` classifies each example of (x, y) right: a bool tensor (N,), in inference mode."""
    return _correct(model, zip(x.split(batch_size), y.split(batch_size)), x.device)


def correct_on(model: nn.Module, split: AnySplit, *, batch_size: int = 1000) -> Tensor:
    """``correct`` over a split, in memory or streamed, batch by batch in order: (N,) bool on the split's device."""
    return _correct(model, ((xb, yb) for xb, yb, _ in split.batches(batch_size)), split.device)


def _correct(model: nn.Module, pairs: Iterable[tuple[Tensor, Tensor]], device: torch.device) -> Tensor:
    with eval_mode(model), torch.inference_mode():
        hits = [model(xb).argmax(1) == yb for xb, yb in pairs]
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool, device=device)


@torch.no_grad()  # not inference_mode: the result is used as a KD target inside autograd
def logits_of(model: nn.Module, x: Tensor | AnySplit, *, batch_size: int = 1000) -> Tensor:
    """The model's logits on ``x`` (a tensor or a split, in its order) in eval mode, shape (N, K)."""
    model.eval()
    if isinstance(x, Tensor):
        return torch.cat([model(xb) for xb in x.split(batch_size)])
    return torch.cat([model(xb) for xb, _, _ in x.batches(batch_size)])


def accuracy(model: nn.Module, x: Tensor | AnySplit, y: Tensor | None = None, *, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on (x, y), or on a split given as ``x``: mean_i [argmax f(x_i) = y_i],
    in inference mode."""
    if y is None:
        return share(correct_on(model, x, batch_size=batch_size))
    return share(correct(model, x, y, batch_size=batch_size))


def robust_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, attack: Callable[..., Tensor], *, batch_size: int = 1000,
    right: Tensor | None = None,
) -> float:
    """Robust accuracy: share of the examples classified right both clean and after ``attack(model, x, y)``.

    mean_i [f(x_i) = y_i and f(x_adv_i) = y_i]. As AutoAttack and RobustBench count: an attack that happens
    to move a misclassified example into its class has not shown it robust, so robust accuracy never exceeds
    clean accuracy (with a random start, PGD does that to a few examples of a barely trained model). ``right``
    is ``correct(model, x, y)`` where the caller has it already (it is the same for every attack on the same
    images). The attack gets gradients, the scoring does not.
    """
    right = correct(model, x, y, batch_size=batch_size) if right is None else right
    return _robust(model, zip(x.split(batch_size), y.split(batch_size)), attack, right.split(batch_size), len(y))


def robust_accuracy_on(
    model: nn.Module, split: AnySplit, attack: Callable[..., Tensor], *, batch_size: int = 1000,
    right: Tensor | None = None,
) -> float:
    """``robust_accuracy`` over a split, in memory or streamed, batch by batch in order."""
    right = correct_on(model, split, batch_size=batch_size) if right is None else right
    pairs = ((xb, yb) for xb, yb, _ in split.batches(batch_size))
    return _robust(model, pairs, attack, right.split(batch_size), len(split))


def _robust(model: nn.Module, pairs: Iterable[tuple[Tensor, Tensor]], attack: Callable[..., Tensor],
            rights: Iterable[Tensor], n: int) -> float:
    hits = 0
    with eval_mode(model):
        for (xb, yb), rb in zip(pairs, rights):
            x_adv = attack(model, xb, yb)
            with torch.inference_mode():
                hits += int((rb & (model(x_adv).argmax(1) == yb)).sum())
    return hits / max(1, n)


def share(hits: Tensor) -> float:
    """The fraction of True in a bool tensor such as ``correct``'s (0 for none)."""
    return int(hits.sum()) / max(1, len(hits))


def mean_jacobian_norm(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> float:
    """Mean input-Jacobian norm: mean_i ||d logits_i / d x_i||_F, exact (the quantity arXiv:1908.02729 penalizes)."""
    with eval_mode(model):
        norms = [jacobian_norm(model, xb) for xb in x.split(batch_size)]  # each (B,)
    return float(torch.cat(norms).mean())


def evaluate_model(
    model: nn.Module, data: Dataset, spec: EvaluationSpec, *, seed: int = 0
) -> dict[str, float]:
    """Accuracy-type metrics on val and test, parameters and Jacobian norm (no latency).

    Each ``val/*`` metric is measured on ``data.val`` and each ``test/*`` on ``data.test``; the Jacobian
    norm on the first ``spec.n_jacobian`` test images.
    """
    gen = torch.Generator(device=data.test.device).manual_seed(seed)
    out: dict[str, float] = {}
    for split in metrics.SPLITS:
        part = getattr(data, split)
        right = correct_on(model, part)  # once per split: every attack below scores against it
        out[metrics.acc(split)] = share(right)
        for eps in spec.eps:
            pgd = _bind(attacks.pgd, eps=eps, steps=spec.pgd_steps, generator=gen)
            out[metrics.attacked_acc(split, eps)] = robust_accuracy_on(model, part, pgd, right=right)
            if spec.fgsm:
                fgsm = _bind(attacks.fgsm, eps=eps)
                out[metrics.attacked_acc(split, eps, "fgsm")] = robust_accuracy_on(model, part, fgsm, right=right)
    out.update(model_costs(model, data.input_shape))
    out[metrics.JACOBIAN_NORM] = mean_jacobian_norm(model, data.test.head(spec.n_jacobian).x)
    return out


def model_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """What ``model`` costs, deterministically: ``model/params`` (every parameter, frozen or not),
    ``model/flops`` (one image's forward pass as ``torch.utils.flop_counter`` counts it: 2 x the
    multiply-adds of matrix products and convolutions; element-wise work such as biases, activations and
    the input normalization is not counted) and ``model/bytes`` (``torch.save`` of its state_dict)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.inference_mode(), counter:
        model(torch.zeros(1, *input_shape, device=device))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return {metrics.PARAMS: float(n_params(model)), metrics.FLOPS: float(counter.get_total_flops()),
            metrics.BYTES: float(buffer.getbuffer().nbytes)}


def _bind(fn: Callable[..., Tensor], **kwargs: object) -> Callable[..., Tensor]:
    return lambda model, x, y: fn(model, x, y, **kwargs)
