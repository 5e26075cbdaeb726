"""The report's "What the search cost" part: the hypervolume against cumulative trial-epochs and against
wall-clock seconds of sweeping (``kdtune.search_cost``), with what a stopped trial saved."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdtune.records import TrialRecord
from kdtune.report import _charts
from kdtune.report._analysis import Space
from kdtune.report._render import Block, Image, Text
from kdtune.search_cost import CostCurve, cost_curve

COST_NOTE = (
    "Trials in the order they finished. A trial costs the epochs it trained: all of them when complete, its"
    " rung's epoch when stopped early, none counted for a failed trial. Wall-clock seconds count from the start"
    " of the study's first sweep, Ray's start-up included, the gaps between sweeps left out."
)


def cost_figure(out_dir: Path, records: Sequence[TrialRecord], space: Space) -> tuple[list[Block], dict[str, Path]]:
    """The section's blocks and its PNG (``hypervolume_by_cost``); nothing where no trial recorded its epochs."""
    if not any(r.epochs for r in records):
        return [], {}
    curve = cost_curve(records, space.hypervolume_of)
    stopped = np.array([records[i].status == "PRUNED" for i in curve.order], dtype=bool)
    path = _charts.cost_plot(out_dir / "hypervolume_by_cost.png", curve, stopped)
    return [Text(f"{COST_NOTE} {_summary(curve, records)}"),
            Image("Hypervolume against trial-epochs and wall-clock seconds", path)], {"hypervolume_by_cost": path}


def _summary(curve: CostCurve, records: Sequence[TrialRecord]) -> str:
    """Totals, and when the hypervolume reached 95% of its final value."""
    stopped = [r for r in records if r.status == "PRUNED"]
    text = f"In all {curve.epochs[-1]:g} trial-epochs over {len(records)} trials"
    if stopped:
        text += f" ({len(stopped)} stopped early, after {sum(r.epochs or 0 for r in stopped):g} epochs between them)"
    text += f" and {curve.seconds[-1]:.0f} s of sweeping." if curve.seconds is not None else "."
    final = float(curve.hypervolume[-1])
    if final <= 0:
        return text + " No trial has added hypervolume yet."
    k = int(np.flatnonzero(curve.hypervolume >= 0.95 * final)[0])
    when = f" and {curve.seconds[k]:.0f} s" if curve.seconds is not None else ""
    share = 100 * curve.epochs[k] / curve.epochs[-1] if curve.epochs[-1] else 100.0
    return (text + f" The hypervolume reached 95% of its final {final:.4f} after {curve.epochs[k]:g} trial-epochs"
            f" ({share:.0f}% of them){when}.")
