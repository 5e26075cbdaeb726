"""Multi-objective ranking for early stopping (numpy only): non-dominated sorting, an epsilon-net order
inside each front, and MO-ASHA's keep-or-stop rule at a rung.

Schmucker et al. 2021, "Multi-objective multi-fidelity hyperparameter optimization with application to
fairness" (arXiv:2106.12639), and Salinas et al. 2021 (NAS workshop, ICLR): points are ranked front by
front (non-dominated sorting); inside a front, by Clarkson's farthest-first traversal (an epsilon-net), so
that the points kept spread over the front instead of crowding one end of it.

``values`` is (n, m), one row per trial and one column per objective; ``modes[j]`` is "max" or "min".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kdtune.pareto import pareto_mask

__all__ = ["epsilon_net_order", "keep_at_rung", "n_kept", "nondominated_sort", "rank_order"]


def nondominated_sort(values: np.ndarray, modes: Sequence[str]) -> list[list[int]]:
    """The fronts of ``values`` (n, m), best first: front 0 is the non-dominated rows, front k those
    non-dominated once fronts 0..k-1 are removed. Row indices ascending within a front."""
    arr = _finite(values)
    remaining = np.arange(len(arr))
    fronts = []
    while remaining.size:
        on_front = pareto_mask(arr[remaining], modes)  # (r,): never empty for finite rows
        fronts.append(remaining[on_front].tolist())
        remaining = remaining[~on_front]
    return fronts


def epsilon_net_order(points: np.ndarray) -> list[int]:
    """Clarkson's farthest-first order of ``points`` (k, m), already normalized and oriented so that lower
    is better: first the point with the lowest first coordinate (the best in the first objective), then
    repeatedly the point whose Euclidean distance to the nearest point already taken is largest.
    Ties go to the lower index, so the order is deterministic."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return []
    order = [int(np.argmin(pts[:, 0]))]  # argmin: the first of equal minima
    nearest = np.linalg.norm(pts - pts[order[0]], axis=1)  # (k,): distance to the nearest taken point
    nearest[order[0]] = -1.0
    while len(order) < len(pts):
        nxt = int(np.argmax(nearest))  # argmax: the first of equal maxima
        order.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(pts - pts[nxt], axis=1))
        nearest[order] = -1.0
    return order


def rank_order(values: np.ndarray, modes: Sequence[str]) -> list[int]:
    """Each row's position (0 = best) in the MO-ASHA order: front by front, each front in epsilon-net order.

    Distances are taken in objectives normalized to [0, 1] by the min and max of each column over all the
    rows (the rung's trials), "max" columns flipped so lower is better; a constant column counts as 0.
    """
    arr = _finite(values)
    if len(arr) == 0:
        return []
    loss = arr * np.array([-1.0 if m == "max" else 1.0 for m in modes])  # (n, m), lower is better
    low, span = loss.min(axis=0), np.ptp(loss, axis=0)  # (m,) each
    scaled = np.divide(loss - low, span, out=np.zeros_like(loss), where=span > 0)  # (n, m) in [0, 1]
    positions = [0] * len(arr)
    taken = 0
    for front in nondominated_sort(arr, modes):
        for offset in epsilon_net_order(scaled[front]):
            positions[front[offset]] = taken
            taken += 1
    return positions


def n_kept(n: int, eta: int) -> int:
    """How many of ``n`` trials at a rung continue: ceil(n / eta) (so the first trial at a rung always does)."""
    return math.ceil(n / eta)


def keep_at_rung(values: np.ndarray, modes: Sequence[str], eta: int, index: int) -> bool:
    """Whether row ``index`` of ``values`` (every trial that reached the rung, itself included) continues:
    its ``rank_order`` position is within the top ceil(n / eta)."""
    if not 0 <= index < len(values):
        raise IndexError(f"row {index} of {len(values)}")
    return rank_order(values, modes)[index] < n_kept(len(values), eta)


def _finite(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"values must have shape (n, m), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("values must be finite to be ranked")
    return arr
