"""Pareto fronts and hypervolume for multi-objective studies (numpy only, no torch).

Every function takes ``values`` of shape (n, m), one row per trial and one column per objective,
with ``modes[j]`` in {"max", "min"} giving each column's direction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from kdtune.compat.hypervolume import compute_hypervolume
from kdtune.metrics import latency_batch, latency_spread
from kdtune.records import Objective, TrialRecord

logger = logging.getLogger(__name__)

__all__ = ["hypervolume", "normalized_objectives", "pareto_mask", "usable_scale"]


def _as_loss(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """``values`` (n, m) turned into minimization: "max" columns are negated."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"values must have shape (n, m), got shape {arr.shape}")
    return arr * _signs(modes, arr.shape[1])


def _signs(modes: Sequence[str], n_objectives: int) -> np.ndarray:
    modes = list(modes)
    if len(modes) != n_objectives:
        raise ValueError(f"got {len(modes)} modes for {n_objectives} objectives")
    unknown = [mode for mode in modes if mode not in ("max", "min")]
    if unknown:
        raise ValueError(f"modes must be 'max' or 'min', got {unknown!r}")
    return np.array([-1.0 if mode == "max" else 1.0 for mode in modes])


def pareto_mask(values: np.ndarray, modes: Sequence[str], tolerance: np.ndarray | None = None) -> np.ndarray:
    """True for the non-dominated rows of ``values`` (n, m); returns a bool array (n,).

    Row a dominates row b if a is no worse in every objective and strictly better in one, so
    duplicates of a front point are all on the front. A row with a NaN or infinite value is
    never on the front and dominates nothing.

    ``tolerance`` (n, m), >= 0, is each value's measurement spread (0 where exact): two rows whose values
    in an objective differ by no more than the larger of their two spreads are tied in it, so neither is
    better there (a latency 13 ns faster than another, within their repeats' spread, dominates nothing).
    """
    loss = _as_loss(values, modes)  # (n, m), lower is better
    tol = np.zeros_like(loss) if tolerance is None else np.nan_to_num(np.asarray(tolerance, dtype=float), nan=0.0)
    if tol.shape != loss.shape or (tol < 0).any():
        raise ValueError(f"tolerance must be non-negative with shape {loss.shape}, got shape {tol.shape}")
    finite = np.isfinite(loss).all(axis=1)
    points, spread = loss[finite], tol[finite]  # (k, m) each
    on_front = np.ones(len(points), dtype=bool)
    for i, point in enumerate(points):
        margin = np.maximum(spread, spread[i])  # (k, m): differences up to this are ties
        better = points < point - margin  # (k, m): where each row beats `point` beyond the noise
        no_worse = points <= point + margin  # (k, m): better, or tied within the noise
        on_front[i] = not (no_worse.all(axis=1) & better.any(axis=1)).any()
    mask = np.zeros(len(loss), dtype=bool)
    mask[np.flatnonzero(finite)[on_front]] = True
    return mask


def hypervolume(values: np.ndarray, modes: Sequence[str], reference: Sequence[float]) -> float:
    """Volume dominated by the rows of ``values`` (n, m) and bounded by ``reference`` (m,).

    Computed after turning every objective into minimization ("max" columns and their reference
    are negated). Rows that do not strictly improve on the reference in every objective (and
    rows with non-finite values) contribute nothing. Exact, via optuna's WFG implementation.
    """
    loss = _as_loss(values, modes)  # (n, m)
    ref = np.asarray(reference, dtype=float)  # (m,)
    if ref.shape != (loss.shape[1],) or not np.isfinite(ref).all():
        raise ValueError(f"reference must be {loss.shape[1]} finite numbers, got {reference!r}")
    ref = ref * _signs(modes, loss.shape[1])
    keep = np.isfinite(loss).all(axis=1) & (loss < ref).all(axis=1)
    if not keep.any():
        return 0.0
    return float(compute_hypervolume()(loss[keep], ref))


def normalized_objectives(
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    teacher_metrics: dict[str, float],
) -> tuple[np.ndarray, np.ndarray]:
    """kdtune's normalized objective space for its reported hypervolume.

    Returns ``(values, reference)``: ``values`` (n, m) for the n records whose objectives are all
    finite (``TrialRecord.objective_values``; failed trials are left out), in record order, and
    ``reference`` (m,). A "max" objective (an accuracy in [0, 1]) is used as is with reference 0;
    a "min" objective (latency, params, Jacobian norm) is divided by the teacher's value of that
    metric with reference 1, so a student adds volume only where it is faster/smaller than the
    teacher. The ideal box then has volume 1, which makes the number comparable across studies.
    If the teacher lacks a min-metric (missing, non-finite or <= 0), that column is divided by
    its max over the trials instead (a warning is logged), which is no longer teacher-relative.
    """
    n_objectives = len(objectives)
    rows = [v for r in records if (v := r.objective_values(list(objectives))) is not None]
    values = np.array(rows, dtype=float).reshape(len(rows), n_objectives)  # (n, m)
    reference = np.zeros(n_objectives)
    for j, objective in enumerate(objectives):
        if objective.mode == "min":
            values[:, j] /= _min_scale(objective.metric, teacher_metrics, values[:, j])
            reference[j] = 1.0
    return values, reference


def usable_scale(value: float | None) -> bool:
    """Whether a teacher's metric value can normalize a "min" objective (finite and > 0)."""
    return value is not None and math.isfinite(value) and value > 0


def _min_scale(metric: str, teacher_metrics: dict[str, float], column: np.ndarray) -> float:
    teacher_value = teacher_metrics.get(metric)
    if usable_scale(teacher_value):
        return float(teacher_value)  # type: ignore[arg-type]
    scale = float(column.max()) if column.size else 1.0
    scale = scale if usable_scale(scale) else 1.0
    logger.warning(
        "teacher has no usable %r (%r); normalizing it by the max over trials (%.4g)",
        metric,
        teacher_value,
        scale,
    )
    return scale


def front_mask(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], feasible: np.ndarray | None = None
) -> np.ndarray:
    """Bool (n,): trials on the Pareto front; only COMPLETE trials with finite objectives qualify, and only
    the ``feasible`` ones (bool (n,), ``kdtune.feasibility``) when given: an infeasible trial dominates nothing.

    Noise-aware: a latency objective carries each trial's measurement spread (``latency/spread_ms_b<batch>``,
    the range of its interleaved repeats), and two latencies closer than the larger spread are a tie
    (``pareto_mask``'s ``tolerance``); every other objective is compared exactly.
    """
    values = [r.objective_values(list(objectives)) for r in records]
    eligible = np.array([v is not None for v in values], dtype=bool).reshape(len(records))
    if feasible is not None:
        eligible &= np.asarray(feasible, dtype=bool)
    mask = np.zeros(len(records), dtype=bool)
    if eligible.any():
        rows = np.array([v for v, ok in zip(values, eligible) if ok], dtype=float)  # (k, m)
        spread = np.array([spreads(r, objectives) for r, ok in zip(records, eligible) if ok])  # (k, m)
        mask[eligible] = pareto_mask(rows, [o.mode for o in objectives], spread)
    return mask


def spreads(record: TrialRecord, objectives: Sequence[Objective]) -> list[float]:
    """Each objective's measurement spread for ``record``: a latency's recorded spread, else 0 (exact)."""
    out = []
    for o in objectives:
        batch = latency_batch(o.metric)
        out.append(record.metrics.get(latency_spread(batch), 0.0) if batch is not None else 0.0)
    return out
