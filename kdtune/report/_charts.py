"""PNG charts next to the front plots: robust accuracy over eps, hypervolume by trial, importances.

These are report.md's figures; report.html shows the interactive versions (``_interactive``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdtune.records import TrialRecord
from kdtune.report._analysis import Importances, robust_curve
from kdtune.search_cost import CostCurve


def _figure(width: float = 6.4, height: float = 4.8, *, ncols: int = 1):
    """A figure and its axes (one, or a list of ``ncols`` side by side)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot() if ncols == 1 else list(fig.subplots(1, ncols))


def robust_curves_plot(
    path: Path,
    members: Sequence[TrialRecord],
    teacher_metrics: dict[str, float],
    knee: TrialRecord | None = None,
) -> Path:
    """Test robust accuracy against eps (eps 0: clean accuracy), one line per front member and the teacher."""
    fig, ax = _figure(7.2, 4.8)
    for record in members:
        eps, acc = robust_curve(record.metrics)
        picked = knee is not None and record.trial_id == knee.trial_id
        ax.plot(eps, acc, marker="o", markersize=3, linewidth=2.5 if picked else 1.0,
                color="tab:orange" if picked else "tab:blue", alpha=1.0 if picked else 0.45,
                label=f"suggested pick ({record.trial_id})" if picked else None, zorder=3 if picked else 2)
    eps, acc = robust_curve(teacher_metrics)
    if len(eps):
        ax.plot(eps, acc, marker="*", markersize=9, linewidth=2.0, linestyle="--", color="tab:red",
                label="teacher", zorder=4)
    ax.plot([], [], color="tab:blue", alpha=0.45, label=f"front members ({len(members)})")
    ax.set_xlabel("ε (L∞ attack budget)")
    ax.set_ylabel("robust accuracy (test)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Robust accuracy against ε: the front and the teacher")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, format="png")
    return path


def hypervolume_plot(path: Path, history: np.ndarray, records: Sequence[TrialRecord]) -> Path:
    """The hypervolume of the first k trials against k; trials that enlarged it are marked."""
    fig, ax = _figure(7.2, 4.0)
    k = np.arange(1, len(history) + 1)
    ax.step(k, history, where="post", color="tab:blue", linewidth=1.5, label="hypervolume of trials 1..k")
    grew = np.flatnonzero(np.diff(np.concatenate([[0.0], history])) > 1e-12)
    ax.scatter(k[grew], history[grew], s=24, color="tab:blue", edgecolor="black", zorder=3,
               label="trial enlarged it")
    failed = [i for i, r in enumerate(records) if r.status == "FAILED"]
    if failed:
        ax.scatter(k[failed], history[failed], s=24, marker="x", color="tab:red", zorder=3, label="failed trial")
    pruned = [i for i, r in enumerate(records) if r.status == "PRUNED"]
    if pruned:
        ax.scatter(k[pruned], history[pruned], s=20, marker="|", color="tab:gray", zorder=3,
                   label="trial stopped early")
    ax.set_xlabel("trial number (in the order the trials were run)")
    ax.set_ylabel("normalized hypervolume")
    ax.set_title("Does the search still improve?")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path, format="png")
    return path


def cost_plot(path: Path, curve: CostCurve, stopped: np.ndarray) -> Path:
    """The hypervolume against cumulative trial-epochs and, when known, wall-clock seconds of sweeping;
    ``stopped`` (bool, in the curve's order) marks the trials stopped early."""
    panels = [(curve.epochs, "cumulative trial-epochs")]
    if curve.seconds is not None:
        panels.append((curve.seconds, "wall-clock seconds of sweeping"))
    fig, axes = _figure(5.0 * len(panels) + 1.0, 4.0, ncols=len(panels))
    for ax, (x, label) in zip(axes if len(panels) > 1 else [axes], panels):
        ax.step(x, curve.hypervolume, where="post", color="tab:blue", linewidth=1.5, label="hypervolume so far")
        if stopped.any():
            ax.scatter(x[stopped], curve.hypervolume[stopped], s=20, marker="|", color="tab:gray", zorder=3,
                       label="a trial stopped early")
        ax.set_xlabel(label)
        ax.set_ylabel("normalized hypervolume")
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle("What the search cost")
    fig.savefig(path, format="png")
    return path


def importance_plot(path: Path, importances: Importances) -> Path:
    """Grouped horizontal bars: each parameter's fANOVA importance for each objective."""
    objectives = list(importances.values)
    params = list(dict.fromkeys(p for found in importances.values.values() for p in found))
    fig, ax = _figure(7.2, max(2.5, 0.5 + 0.45 * len(params) * max(1, len(objectives)) ** 0.5))
    height = 0.8 / max(1, len(objectives))
    y = np.arange(len(params))
    for j, metric in enumerate(objectives):
        values = [importances.values[metric].get(p, 0.0) for p in params]
        ax.barh(y + (j - (len(objectives) - 1) / 2) * height, values, height=height, label=metric)
    ax.set_yticks(y, params)
    ax.invert_yaxis()  # the first parameter on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance (fANOVA; sums to 1 per objective)")
    ax.set_title("Hyperparameter importance for each objective")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path, format="png")
    return path
