"""Every figure of the report, as ``Image`` blocks: a PNG for report.md plus, when plotly is installed, the
interactive version report.html shows instead."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdtune.records import Objective, TrialRecord
from kdtune.report import _charts, _interactive
from kdtune.report._analysis import Importances, robust_curve
from kdtune.report._drawing import Png
from kdtune.report._plots import front_3d_plot, front_pairs, front_pngs
from kdtune.report._render import Block, Image
from kdtune.report._tables import sorted_by_first_objective


@dataclass
class Figures:
    """The report's figures by section, and every PNG written ({file stem: path})."""

    fronts: list[Image] = field(default_factory=list)  # one per pair of objectives, then the 3-D one
    robust: Image | None = None
    hypervolume: Image | None = None
    importance: Image | None = None
    cost: list[Block] = field(default_factory=list)  # the hypervolume against what the search spent
    paths: dict[str, Path] = field(default_factory=dict)


def drawn_apart(
    out_dir: Path,
    records: Sequence[TrialRecord],
    front: np.ndarray,
    objectives: Sequence[Objective],
    *,
    knee: int | None,
    history: np.ndarray,
    teacher_metrics: dict[str, float],
    feasible: np.ndarray | None = None,
) -> dict[str, Png]:
    """The PNGs the report may draw beside the rest of its work (``_drawing.Drawing``): a front plot per pair
    of objectives, the 3-D one and the hypervolume by trial (``history``). Chosen so that the two sides'
    work is balanced and neither waits long for the other (docs/performance.md)."""
    pngs = front_pngs(out_dir, records, front, objectives, teacher_metrics, knee=knee, feasible=feasible)
    if len(objectives) == 3:
        pngs["front_3d"] = Png(out_dir / "front_3d.png", front_3d_plot, (records, front, objectives, teacher_metrics),
                               dict(knee=knee, feasible=feasible))
    if len(records):
        pngs["hypervolume_by_trial"] = Png(out_dir / "hypervolume_by_trial.png", _charts.hypervolume_plot,
                                           (history, records))
    return pngs


def make_figures(
    out_dir: Path,
    records: Sequence[TrialRecord],
    front: np.ndarray,
    objectives: Sequence[Objective],
    *,
    knee: int | None,
    history: np.ndarray,
    importances: Importances,
    search_params: Sequence[str],
    teacher_metrics: dict[str, float],
    interactive: bool,
    drawn: dict[str, Path],
    feasible: np.ndarray | None = None,
) -> Figures:
    """Write the remaining PNGs into ``out_dir`` and build the blocks; ``drawn`` are the paths of the
    ``drawn_apart`` PNGs. ``interactive`` adds the plotly versions, with trials not ``feasible`` greyed out."""
    interactive = interactive and _interactive.available()
    hover = _interactive.hover_texts(records, objectives, search_params) if interactive else []
    figures = Figures(paths=dict(drawn))
    for stem, (y, x) in front_pairs(objectives).items():
        html = _interactive.front_pair(f"plot-{stem}", records, front, knee, hover, x=x, y=y, objectives=objectives,
                                       teacher_metrics=teacher_metrics, feasible=feasible) if interactive else None
        figures.fronts.append(Image(f"{y.metric} vs {x.metric}", drawn[stem], html))
    if "front_3d" in drawn:  # three objectives
        html = _interactive.front_3d("plot-front_3d", records, front, knee, hover, objectives=objectives,
                                     teacher_metrics=teacher_metrics, feasible=feasible) if interactive else None
        figures.fronts.append(Image("All three objectives", drawn["front_3d"], html))
    picked = records[knee] if knee is not None else None
    members = [r for r, f in zip(records, front) if f and len(robust_curve(r.metrics)[0]) > 1]
    members = sorted_by_first_objective(members, objectives)  # the legend in the front table's order
    if members:
        path = figures.paths["robust_acc_vs_eps"] = _charts.robust_curves_plot(
            out_dir / "robust_acc_vs_eps.png", members, teacher_metrics, knee=picked)
        by_id = {r.trial_id: t for r, t in zip(records, hover)}
        html = _interactive.robust_curves("plot-robust_acc_vs_eps", members, by_id, teacher_metrics,
                                          picked) if interactive else None
        figures.robust = Image("Robust accuracy against ε, front members and the teacher", path, html)
    if "hypervolume_by_trial" in drawn:  # any trials
        path = drawn["hypervolume_by_trial"]
        html = _interactive.hypervolume_by_trial("plot-hypervolume_by_trial", history, records,
                                                 hover) if interactive else None
        figures.hypervolume = Image("Hypervolume of the first k trials", path, html)
    if importances.values:
        path = figures.paths["importance"] = _charts.importance_plot(out_dir / "importance.png", importances)
        html = _interactive.importance("plot-importance", importances) if interactive else None
        figures.importance = Image("Hyperparameter importance for each objective", path, html)
    return figures
