"""Pareto-front plots as PNG files, one per pair of objectives and one in 3-D (matplotlib's Agg canvas;
pyplot is never touched). The knee point (the suggested pick) is ringed in each; infeasible trials
(``kdtune.feasibility``) are greyed out."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdtune.metrics import ci95_of, mean_of
from kdtune.pareto import pareto_mask
from kdtune.records import Objective, TrialRecord
from kdtune.report._drawing import Png

INFEASIBLE_LABEL = "infeasible"  # the legend entry of the greyed-out trials (not feasible, kdtune.feasibility)


def safe_name(metric: str) -> str:
    """A metric name as a file-name part: ``val/acc`` -> ``val-acc``, ``acc@0.1`` -> ``acc_0.1``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", metric.replace("/", "-"))


def front_pairs(objectives: Sequence[Objective]) -> dict[str, tuple[Objective, Objective]]:
    """{file stem: (first, second)} for each pair of objectives, e.g. ``front_val-acc__latency-ms_b1`` for
    (val/acc, latency/ms_b1); its plot draws the first against the second."""
    pairs: dict[str, tuple[Objective, Objective]] = {}
    for first, second in itertools.combinations(objectives, 2):
        stem = f"front_{safe_name(first.metric)}__{safe_name(second.metric)}"
        while stem in pairs:  # two metric names that map to the same file name
            stem += "_"
        pairs[stem] = (first, second)
    return pairs


def front_pngs(
    out_dir: Path,
    records: Sequence[TrialRecord],
    front: np.ndarray,
    objectives: Sequence[Objective],
    teacher_metrics: dict[str, float],
    knee: int | None = None,
    feasible: np.ndarray | None = None,
) -> dict[str, Png]:
    """One PNG per pair of objectives (``front_pairs``), to draw: {file stem: Png}.

    ``knee`` is the position in ``records`` of the suggested pick, ringed in every plot; trials not
    ``feasible`` (bool (n,); default: all) are drawn greyed out and draw no staircase.
    """
    feasible = np.ones(len(records), dtype=bool) if feasible is None else feasible
    complete = [
        (r, bool(f), r.objective_values(list(objectives)) is not None, bool(ok))
        for r, f, ok in zip(records, front, feasible)
        if r.status == "COMPLETE"
    ]
    picked = records[knee] if knee is not None else None
    return {stem: Png(out_dir / f"{stem}.png", _plot_pair, (complete,), dict(
                x=second, y=first, teacher_metrics=teacher_metrics, n_objectives=len(objectives), knee=picked))
            for stem, (first, second) in front_pairs(objectives).items()}


def _plot_pair(
    path: Path,
    complete: Sequence[tuple[TrialRecord, bool, bool, bool]],  # (record, on the front, eligible, feasible)
    *,
    x: Objective,
    y: Objective,
    teacher_metrics: dict[str, float],
    n_objectives: int,
    knee: TrialRecord | None = None,
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = np.array(
        [[metric_value(r, x.metric), metric_value(r, y.metric), on_front, ok and feasible, not feasible]
         for r, on_front, ok, feasible in complete],
        dtype=float,
    ).reshape(-1, 5)  # (n, 5): x, y, on the full front, eligible for the front and feasible, infeasible
    points = points[np.isfinite(points[:, :2]).all(axis=1)]
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    greyed = points[:, 4] == 1.0
    ax.scatter(points[~greyed, 0], points[~greyed, 1], s=18, color="0.7", label="trials", zorder=1)
    if greyed.any():
        ax.scatter(points[greyed, 0], points[greyed, 1], s=18, marker="x", color="0.85",
                   label=INFEASIBLE_LABEL, zorder=1)
    eligible = points[points[:, 3] == 1.0, :2]  # a trial with a NaN objective, or infeasible, draws no stairs
    _draw_staircase(ax, eligible, x=x, y=y, exact=n_objectives == 2)
    members = points[points[:, 2] == 1.0]
    ax.scatter(members[:, 0], members[:, 1], s=40, color="tab:blue", edgecolor="black",
               label="Pareto front", zorder=3)
    if knee is not None:
        ax.scatter(metric_value(knee, x.metric), metric_value(knee, y.metric), s=200, facecolor="none", edgecolor="tab:orange",
                   linewidth=2.5, label=f"suggested pick ({knee.trial_id})", zorder=5)
    bars = seed_error_bars([r for r, *_ in complete], x.metric, y.metric)
    if bars is not None:  # (4, m): mean x, mean y, ci x, ci y of the front members repeated over seeds
        ax.errorbar(bars[0], bars[1], xerr=bars[2], yerr=bars[3], fmt="o", mfc="none", color="tab:green",
                    capsize=3, label="mean over seeds ± 95%", zorder=2)
    teacher = (teacher_metrics.get(x.metric), teacher_metrics.get(y.metric))
    if all(v is not None and math.isfinite(v) for v in teacher):
        ax.scatter(*teacher, s=220, marker="*", color="tab:red", edgecolor="black",
                   label="teacher", zorder=4)
    _maybe_log_scale(ax, points[:, 0], teacher[0], axis="x")
    _maybe_log_scale(ax, points[:, 1], teacher[1], axis="y")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(f"{y.metric} vs {x.metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, format="png")


def seed_error_bars(records: Sequence[TrialRecord], x: str, y: str) -> np.ndarray | None:
    """(4, m) array of mean x, mean y, 95% half-width x, y for the trials repeated over seeds
    (``<metric>/mean`` and ``<metric>/ci95``, see ``evaluation.seeds``); None when there are none."""
    rows = [[r.metrics[mean_of(m)] for m in (x, y)] + [r.metrics[ci95_of(m)] for m in (x, y)]
            for r in records if all(name in r.metrics for m in (x, y) for name in (mean_of(m), ci95_of(m)))]
    return np.array(rows, dtype=float).T if rows else None


def _draw_staircase(ax, xy: np.ndarray, *, x: Objective, y: Objective, exact: bool) -> None:
    """Connect the non-dominated points of this pair as the boundary of their dominated region.

    With two objectives this is the front itself; with more, it is the front of the projection
    (drawn dashed), since a member of the full front can be dominated in a single pair.
    """
    if len(xy) == 0:
        return
    stairs, where = staircase(xy, x=x, y=y)
    ax.step(stairs[:, 0], stairs[:, 1], where=where, color="tab:blue",
            linestyle="-" if exact else "--", linewidth=1.2, zorder=2,
            label=None if exact else "front of this pair")


def staircase(xy: np.ndarray, *, x: Objective, y: Objective) -> tuple[np.ndarray, str]:
    """The non-dominated rows of ``xy`` (k, 2) sorted by x, and the step style joining them.

    Moving right along x: a "min" x keeps the previous y until the next point ("post"), a "max" x
    jumps first ("pre").
    """
    stairs = xy[pareto_mask(xy, [x.mode, y.mode])]
    stairs = stairs[np.lexsort((stairs[:, 1], stairs[:, 0]))]  # by x, ties by y
    return stairs, "post" if x.mode == "min" else "pre"


def use_log(values: np.ndarray, teacher: float | None) -> bool:
    """A log axis when positive values span more than two orders of magnitude (e.g. params)."""
    all_values = np.append(np.asarray(values, dtype=float), teacher if teacher is not None else np.nan)
    all_values = all_values[np.isfinite(all_values)]
    return bool(len(all_values) > 1 and all_values.min() > 0 and all_values.max() / all_values.min() > 100)


def _maybe_log_scale(ax, values: np.ndarray, teacher: float | None, *, axis: str) -> None:
    if use_log(values, teacher):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def front_3d_plot(
    path: Path,
    records: Sequence[TrialRecord],
    front: np.ndarray,
    objectives: Sequence[Objective],
    teacher_metrics: dict[str, float],
    knee: int | None = None,
    feasible: np.ndarray | None = None,
) -> Path:
    """The three objectives in one 3-D scatter (log axes drawn as log10 values), trials not ``feasible``
    (bool (n,); default: all) greyed out; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 6.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="3d")
    rows = [(i, r.objective_values(list(objectives))) for i, r in enumerate(records)]
    points = np.array([v for _, v in rows if v is not None], dtype=float).reshape(-1, 3)  # (k, 3)
    on_front = np.array([bool(front[i]) for i, v in rows if v is not None], dtype=bool)
    greyed = np.array([feasible is not None and not feasible[i] for i, v in rows if v is not None], dtype=bool)
    teacher = np.array([teacher_metrics.get(o.metric, math.nan) for o in objectives], dtype=float)
    logs = [use_log(points[:, j], teacher[j]) for j in range(3)]
    scaled = _log_columns(points, logs)
    ax.scatter(*scaled[~on_front & ~greyed].T, s=12, color="0.7", label="trials")
    if greyed.any():
        ax.scatter(*scaled[greyed].T, s=12, marker="x", color="0.85", label=INFEASIBLE_LABEL)
    ax.scatter(*scaled[on_front].T, s=36, color="tab:blue", edgecolor="black", label="Pareto front", depthshade=False)
    if knee is not None and (value := records[knee].objective_values(list(objectives))) is not None:
        ax.scatter(*_log_columns(np.array([value]), logs).T, s=220, facecolor="none", edgecolor="tab:orange",
                   linewidth=2.5, label=f"suggested pick ({records[knee].trial_id})", depthshade=False)
    if np.isfinite(teacher).all():
        ax.scatter(*_log_columns(teacher[None, :], logs).T, s=220, marker="*", color="tab:red",
                   edgecolor="black", label="teacher", depthshade=False)
    setters = (ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)
    for set_label, objective, log in zip(setters, objectives, logs):
        set_label(("log10 " if log else "") + axis_label(objective), fontsize="small")
    ax.set_title("Trials in the space of all three objectives")
    ax.legend(loc="upper left", fontsize="small")
    fig.savefig(path, format="png")
    return path


def _log_columns(points: np.ndarray, logs: Sequence[bool]) -> np.ndarray:
    out = np.array(points, dtype=float)
    for j, log in enumerate(logs):
        if log:
            out[:, j] = np.log10(out[:, j])
    return out


def axis_label(objective: Objective) -> str:
    """``val/acc (higher is better)``: an axis title that says which way is better."""
    better = "higher" if objective.mode == "max" else "lower"
    return f"{objective.metric} ({better} is better)"


def metric_value(record: TrialRecord, metric: str) -> float:
    """The record's value of ``metric`` as a float; NaN when it has none."""
    value = record.metrics.get(metric)
    return float(value) if value is not None else math.nan
