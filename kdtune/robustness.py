"""Robustness beyond our own attacks: AutoAttack accuracy (via IBM's ART) and gradient-masking checks.

AutoAttack (Croce & Hein, arXiv:2003.01690) is the parameter-free ensemble that catches defences
which only look robust because their gradients are uninformative. ``masking_checks`` applies the
cheap sanity checks of Carlini et al., "On Evaluating Adversarial Robustness" (arXiv:1902.06705, §5)
to one model's metrics. ``art`` (adversarial-robustness-toolbox) is imported only when needed.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from kdtune import metrics
from kdtune.attacks import pgd
from kdtune.evaluate import correct, eval_mode, robust_accuracy, share

if TYPE_CHECKING:
    from kdtune.data import AnySplit
    from kdtune.spec import EvaluationSpec

# The reduced CPU budget (standard AutoAttack: 100 APGD iterations, 5 restarts, 5000 Square queries).
APGD_ITER, APGD_RESTARTS, SQUARE_QUERIES = 50, 1, 1000
AUTOATTACK_BUDGET = (
    f"untargeted APGD-CE and APGD-DLR ({APGD_ITER} iterations, {APGD_RESTARTS} restart each), "
    f"then Square ({SQUARE_QUERIES} queries)"
)


def autoattack_metrics(model: nn.Module, test: AnySplit, spec: EvaluationSpec, *, n_classes: int,
                       seed: int) -> dict[str, float]:
    """AutoAttack accuracy at each of ``spec.autoattack.eps`` on the first ``n_samples`` test images, with clean
    and PGD (``spec.pgd_steps``) accuracy on the same images (``test_autoattack_images/...``): like with like."""
    head = test.head(spec.autoattack.n_samples).to("cpu")
    x, y = head.x, head.y
    right = correct(model, x, y)
    out = {metrics.acc(metrics.AA_SUBSET): share(right)}
    for e in spec.autoattack.eps:
        pgd_e = functools.partial(pgd, eps=e, steps=spec.pgd_steps)
        out[metrics.attacked_acc(metrics.AA_SUBSET, e)] = robust_accuracy(model, x, y, pgd_e, right=right)
        aa = autoattack_accuracy(model, x, y, eps=e, n_classes=n_classes, seed=seed)
        out[metrics.attacked_acc("test", e, "autoattack")] = aa
        out[metrics.attacked_acc(metrics.AA_SUBSET, e, "autoattack")] = aa
    return out


def autoattack_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    n_classes: int,
    seed: int,
    batch_size: int = 256,
    n_iter: int = APGD_ITER,
    n_restarts: int = APGD_RESTARTS,
    n_queries: int = SQUARE_QUERIES,
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy of ``model`` on (x, y) under L-inf AutoAttack of radius ``eps`` (Croce & Hein 2020, arXiv:2003.01690).

    Pixels in [0, 1]. The untargeted AutoAttack ensemble as ART provides it, each attack run on the points
    that survived the previous ones: APGD-CE, APGD-DLR (initial step 2 * eps), then the gradient-free
    Square attack (Andriushchenko et al. 2019, arXiv:1912.00049). Reduced CPU budget by default: ``n_iter``
    = 50 iterations and ``n_restarts`` = 1 restart per APGD (standard: 100 and 5), ``n_queries`` = 1000
    Square queries (standard: 5000).
    ART's DeepFool (an L2 attack) is left out. Seeded: numpy's and Python's global generators are
    seeded for the call and restored afterwards.
    """
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import PyTorchClassifier

    device = torch.device(device)
    with eval_mode(model), _seeded(seed), _current_cuda(device):
        classifier = PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=n_classes,
            clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu",
        )
        apgd = {
            "estimator": classifier, "norm": np.inf, "eps": eps, "eps_step": 2 * eps, "max_iter": n_iter,
            "nb_random_init": n_restarts, "batch_size": batch_size, "verbose": False,
        }
        attacks = [
            AutoProjectedGradientDescent(**apgd, loss_type="cross_entropy"),
            AutoProjectedGradientDescent(**apgd, loss_type="difference_logits_ratio"),
            SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=n_queries, nb_restarts=1,
                         batch_size=batch_size, verbose=False),
        ]
        attack = AutoAttack(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=attacks, batch_size=batch_size)
        x_np = x.detach().cpu().numpy().astype(np.float32)  # (N, C, H, W)
        y_np = y.detach().cpu().numpy()
        x_adv = attack.generate(x=x_np, y=y_np)
        predictions = classifier.predict(x_adv, batch_size=batch_size).argmax(axis=1)  # (N,)
    return float((predictions == y_np).mean()) if len(y_np) else 0.0


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed numpy's and Python's global generators (ART draws from both), restoring them after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@contextmanager
def _current_cuda(device: torch.device) -> Iterator[None]:
    """ART runs on the *current* CUDA device; make that the one passed in."""
    if device.type != "cuda":
        yield
        return
    with torch.cuda.device(device):
        yield


def masking_checks(
    measured: Mapping[str, float], eps_list: Sequence[float], split: str = "test", *, tol: float = 0.01
) -> list[str]:
    """Gradient-masking sanity checks on one model's metrics; one line per violation, [] if it passes.

    Checked, each with slack ``tol``: accuracy under PGD, FGSM and AutoAttack does not rise with eps;
    PGD is no weaker than FGSM and AutoAttack no weaker than PGD at the same eps; no robust accuracy
    exceeds clean accuracy. Metrics that are missing or not finite are skipped. Carlini et al. 2019,
    arXiv:1902.06705.
    """
    attacks = {"PGD": "pgd", "FGSM": "fgsm", "AutoAttack": "autoattack"}
    eps_sorted = sorted(set(eps_list))

    def value(kind: str, eps: float) -> tuple[str, float]:
        name = metrics.attacked_acc(split, eps, attacks[kind])  # type: ignore[arg-type]
        return name, _finite(measured.get(name))

    violations = []
    for kind in attacks:  # robust accuracy must not rise with eps (between the eps it was measured at)
        present = [value(kind, e) for e in eps_sorted if not math.isnan(value(kind, e)[1])]
        for (m_small, v_small), (m_large, v_large) in itertools.pairwise(present):
            if _exceeds(v_large, v_small, tol):
                violations.append(f"{kind} accuracy rises with eps: {m_large}={v_large:.4f} > {m_small}={v_small:.4f}")
    clean_name = metrics.acc(split)
    clean = _finite(measured.get(clean_name))
    for eps in eps_sorted:
        for stronger, weaker in (("PGD", "FGSM"), ("AutoAttack", "PGD")):
            (m_strong, v_strong), (m_weak, v_weak) = value(stronger, eps), value(weaker, eps)
            if _exceeds(v_strong, v_weak, tol):
                violations.append(f"{stronger} weaker than {weaker} at eps={metrics.eps_name(eps)}: "
                                  f"{m_strong}={v_strong:.4f} > {m_weak}={v_weak:.4f}")
        for kind in attacks:
            name, robust = value(kind, eps)
            if _exceeds(robust, clean, tol):
                violations.append(f"{kind} accuracy above clean accuracy: {name}={robust:.4f} > "
                                  f"{clean_name}={clean:.4f}")
    return violations


def _finite(value: float | None) -> float:
    try:
        value = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _exceeds(a: float, b: float, tol: float) -> bool:
    """a > b + tol, with float round-off forgiven (0.51 vs 0.50 at tol 0.01 passes); NaN never exceeds."""
    return a - b > tol + 1e-9
