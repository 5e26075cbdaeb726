"""report.html's interactive figures: plotly figures as HTML fragments (``<div>`` + its ``<script>``).

plotly.js itself is not in the fragments: ``plotly_js()`` is embedded once per page, so the page opens
from disk with no network. Hovering a point shows its trial id, hyperparameters and objective values.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Sequence

import numpy as np

from kdtune.records import Objective, TrialRecord
from kdtune.report._analysis import Importances, robust_curve
from kdtune.report._plots import INFEASIBLE_LABEL, axis_label, metric_value, seed_error_bars, staircase, use_log
from kdtune.report._tables import format_metric, format_param

TRIALS, FRONT, KNEE, TEACHER, INFEASIBLE = "#b8b8b8", "#1f77b4", "#ff7f0e", "#d62728", "#dcdcdc"
_CONFIG = {"displaylogo": False, "responsive": True}
TEMPLATE = "plotly_white"


def available() -> bool:
    """Whether plotly is importable (else report.html falls back to the PNGs)."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True


def plotly_js() -> str:
    """The plotly.js bundle, to inline once per page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def hover_texts(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], search_params: Sequence[str]
) -> list[str]:
    """One hover label per record: trial id, hyperparameters, then objective values (plotly's <br> markup)."""
    texts = []
    for r in records:
        lines = [f"<b>trial {html.escape(r.trial_id)}</b>" + ("" if r.status == "COMPLETE" else f" ({r.status.lower()})")]
        lines += [f"{html.escape(p)} = {html.escape(format_param(r.params.get(p)))}"
                  for p in search_params if r.params.get(p) is not None]
        lines += [f"<i>{html.escape(o.metric)}</i> = {format_metric(o.metric, r.metrics.get(o.metric))}"
                  for o in objectives]
        texts.append("<br>".join(lines))
    return texts


def _teacher_hover(objectives: Sequence[Objective], values: Sequence[float]) -> str:
    lines = [f"<i>{html.escape(o.metric)}</i> = {format_metric(o.metric, v)}" for o, v in zip(objectives, values)]
    return "<br>".join(["<b>teacher</b>", *lines])


def _div(fig, div_id: str, *, margin: dict | None = None) -> str:
    """``fig`` as an HTML fragment in the report's template (``TEMPLATE``).

    The template goes into the figure's JSON as it is: assigning it to the figure (``template=...``)
    would validate and copy the whole template again for every figure, for the same output
    (docs/performance.md).
    """
    import plotly.io as pio

    fig.update_layout(margin=margin or {"l": 60, "r": 20, "t": 50, "b": 50}, hoverlabel={"align": "left"})
    spec = fig.to_dict()
    spec["layout"]["template"] = _template()
    return pio.to_html(spec, full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG, validate=False)


@functools.cache
def _template() -> dict:
    """The report's plotly template as plain JSON data (validated once, by plotly, when first loaded)."""
    import plotly.io as pio

    return pio.templates[TEMPLATE].to_plotly_json()


def _axis(objective: Objective, values: np.ndarray, teacher: float | None) -> dict:
    return {"title": {"text": axis_label(objective)}, "type": "log" if use_log(values, teacher) else "linear"}


def front_pair(
    div_id: str, records: Sequence[TrialRecord], front: np.ndarray, knee: int | None, hover: Sequence[str], *,
    x: Objective, y: Objective, objectives: Sequence[Objective], teacher_metrics: dict[str, float],
    feasible: np.ndarray | None = None,
) -> str:
    """``y`` against ``x``: all complete trials (those not ``feasible`` greyed out), the front, its staircase,
    the suggested pick and the teacher."""
    import plotly.graph_objects as go

    shown = [i for i, r in enumerate(records) if r.status == "COMPLETE"
             and math.isfinite(metric_value(r, x.metric)) and math.isfinite(metric_value(r, y.metric))]
    ok = np.ones(len(records), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    xs, ys = (np.array([metric_value(records[i], m) for i in shown]) for m in (x.metric, y.metric))
    fig = go.Figure()
    n_objectives = len(objectives)
    eligible = [k for k, i in enumerate(shown) if ok[i] and records[i].objective_values(list(objectives)) is not None]
    if eligible:  # a trial with a NaN objective, or infeasible, draws no stairs
        stairs, where = staircase(np.column_stack([xs[eligible], ys[eligible]]), x=x, y=y)
        fig.add_scatter(x=stairs[:, 0], y=stairs[:, 1], mode="lines", hoverinfo="skip",
                        line={"color": FRONT, "width": 1.2, "shape": "hv" if where == "post" else "vh",
                              "dash": "solid" if n_objectives == 2 else "dash"},
                        name="front" if n_objectives == 2 else "front of this pair")
    for label, keep, style in (
        ("trials", [k for k, i in enumerate(shown) if ok[i] and not front[i]], {"size": 7, "color": TRIALS}),
        *_greyed([k for k, i in enumerate(shown) if not ok[i]], size=7),
        ("Pareto front", [k for k, i in enumerate(shown) if front[i]],
         {"size": 10, "color": FRONT, "line": {"width": 1, "color": "black"}}),
        ("suggested pick", [k for k, i in enumerate(shown) if i == knee],
         {"size": 18, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": KNEE}}),
    ):
        fig.add_scatter(x=xs[keep], y=ys[keep], mode="markers", marker=style, name=label,
                        hovertext=[hover[shown[k]] for k in keep], hoverinfo="text")
    bars = seed_error_bars([r for r in records if r.status == "COMPLETE"], x.metric, y.metric)
    if bars is not None:  # front members repeated over seeds: mean ± 95% interval
        fig.add_scatter(x=bars[0], y=bars[1], mode="markers", name="mean over seeds ± 95%",
                        error_x={"type": "data", "array": bars[2]}, error_y={"type": "data", "array": bars[3]},
                        marker={"size": 9, "symbol": "circle-open", "color": "green"})
    teacher = [teacher_metrics.get(x.metric), teacher_metrics.get(y.metric)]
    if all(v is not None and math.isfinite(v) for v in teacher):
        fig.add_scatter(x=[teacher[0]], y=[teacher[1]], mode="markers", name="teacher", hoverinfo="text",
                        hovertext=[_teacher_hover([x, y], teacher)],
                        marker={"symbol": "star", "size": 18, "color": TEACHER, "line": {"width": 1, "color": "black"}})
    fig.update_layout(title={"text": f"{y.metric} vs {x.metric}"}, height=480,
                      xaxis=_axis(x, xs, teacher[0]), yaxis=_axis(y, ys, teacher[1]))
    return _div(fig, div_id)


def front_3d(
    div_id: str, records: Sequence[TrialRecord], front: np.ndarray, knee: int | None, hover: Sequence[str], *,
    objectives: Sequence[Objective], teacher_metrics: dict[str, float], feasible: np.ndarray | None = None,
) -> str:
    """The three objectives in one rotatable 3-D scatter, trials not ``feasible`` greyed out."""
    import plotly.graph_objects as go

    shown = [i for i, r in enumerate(records) if r.objective_values(list(objectives)) is not None]
    ok = np.ones(len(records), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    points = np.array([records[i].objective_values(list(objectives)) for i in shown], dtype=float).reshape(-1, 3)
    fig = go.Figure()
    for label, keep, style in (
        ("trials", [k for k, i in enumerate(shown) if ok[i] and not front[i]], {"size": 3, "color": TRIALS}),
        *_greyed([k for k, i in enumerate(shown) if not ok[i]], size=3),
        ("Pareto front", [k for k, i in enumerate(shown) if front[i]],
         {"size": 5, "color": FRONT, "line": {"width": 1, "color": "black"}}),
        ("suggested pick", [k for k, i in enumerate(shown) if i == knee],
         {"size": 10, "color": KNEE, "symbol": "diamond-open", "line": {"width": 3, "color": KNEE}}),
    ):
        fig.add_scatter3d(x=points[keep, 0], y=points[keep, 1], z=points[keep, 2], mode="markers", name=label,
                          marker=style, hovertext=[hover[shown[k]] for k in keep], hoverinfo="text")
    teacher = [teacher_metrics.get(o.metric) for o in objectives]
    if all(v is not None and math.isfinite(v) for v in teacher):
        fig.add_scatter3d(x=[teacher[0]], y=[teacher[1]], z=[teacher[2]], mode="markers", name="teacher",
                          marker={"size": 8, "color": TEACHER, "symbol": "diamond"},
                          hovertext=[_teacher_hover(objectives, teacher)], hoverinfo="text")
    scene = {f"{name}axis": {**_axis(o, points[:, j], teacher[j]), "title": {"text": o.metric}}
             for j, (name, o) in enumerate(zip("xyz", objectives))}
    scene.update(aspectmode="cube", camera={"eye": {"x": 1.5, "y": -1.5, "z": 0.85}})
    fig.update_layout(title={"text": "All three objectives (drag to rotate; axes: "
                                     + ", ".join(f"{o.metric} {o.mode}" for o in objectives) + ")"},
                      height=640, scene=scene)
    return _div(fig, div_id, margin={"l": 0, "r": 0, "t": 50, "b": 0})


def _greyed(keep: list[int], *, size: int) -> list[tuple[str, list[int], dict]]:
    """The greyed-out trace of infeasible trials, if there are any."""
    return [(INFEASIBLE_LABEL, keep, {"size": size, "color": INFEASIBLE, "symbol": "x"})] if keep else []


def robust_curves(
    div_id: str, members: Sequence[TrialRecord], hover: dict[str, str], teacher_metrics: dict[str, float],
    knee: TrialRecord | None,
) -> str:
    """Test robust accuracy against eps (eps 0: clean accuracy): a line per front member and the teacher."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in members:
        eps, acc = robust_curve(r.metrics)
        picked = knee is not None and r.trial_id == knee.trial_id
        texts = [f"{hover[r.trial_id]}<br>ε = {e:g}: {_acc_name(e)} {a:.4g}" for e, a in zip(eps, acc)]
        fig.add_scatter(x=eps, y=acc, mode="lines+markers", hovertext=texts, hoverinfo="text",
                        name=("★ " if picked else "") + r.trial_id,
                        line={"color": KNEE if picked else FRONT, "width": 3.5 if picked else 1.2},
                        opacity=1.0 if picked else 0.6)
    eps, acc = robust_curve(teacher_metrics)
    if len(eps):
        fig.add_scatter(x=eps, y=acc, mode="lines+markers", name="teacher", hoverinfo="text",
                        hovertext=[f"<b>teacher</b><br>ε = {e:g}: {_acc_name(e)} {a:.4g}" for e, a in zip(eps, acc)],
                        line={"color": TEACHER, "width": 3, "dash": "dash"}, marker={"symbol": "star", "size": 10})
    fig.update_layout(title={"text": "Robust accuracy against ε (test split; ε = 0 is clean accuracy)"},
                      height=480, xaxis={"title": {"text": "ε (L∞ attack budget)"}},
                      yaxis={"title": {"text": "robust accuracy (test)"}, "range": [-0.02, 1.02]})
    return _div(fig, div_id)


def _acc_name(eps: float) -> str:
    return "clean acc" if eps == 0 else "robust acc"


def hypervolume_by_trial(div_id: str, history: np.ndarray, records: Sequence[TrialRecord],
                         hover: Sequence[str]) -> str:
    """The hypervolume of trials 1..k against k; hovering a step shows trial k."""
    import plotly.graph_objects as go

    k = np.arange(1, len(history) + 1)
    gains = np.diff(np.concatenate([[0.0], history]))
    texts = [f"after trial #{n}: hypervolume {h:.4f} ({'+' if g > 1e-12 else '±'}{g:.4f})<br>{t}"
             for n, h, g, t in zip(k, history, gains, hover)]
    fig = go.Figure()
    fig.add_scatter(x=k, y=history, mode="lines", line={"shape": "hv", "color": FRONT}, hoverinfo="skip",
                    name="hypervolume of trials 1..k")
    grew = gains > 1e-12
    fig.add_scatter(x=k[grew], y=history[grew], mode="markers", name="trial enlarged it", hoverinfo="text",
                    hovertext=[t for t, g in zip(texts, grew) if g],
                    marker={"size": 9, "color": FRONT, "line": {"width": 1, "color": "black"}})
    fig.add_scatter(x=k[~grew], y=history[~grew], mode="markers", name="no gain", hoverinfo="text",
                    hovertext=[t for t, g in zip(texts, grew) if not g], marker={"size": 6, "color": TRIALS})
    fig.update_layout(title={"text": "Hypervolume by trial: does the search still improve?"}, height=420,
                      xaxis={"title": {"text": "trial number (in the order run)"}},
                      yaxis={"title": {"text": "normalized hypervolume"}, "rangemode": "tozero"})
    return _div(fig, div_id)


def importance(div_id: str, importances: Importances) -> str:
    """Grouped horizontal bars: each parameter's importance for each objective."""
    import plotly.graph_objects as go

    params = list(dict.fromkeys(p for found in importances.values.values() for p in found))
    fig = go.Figure()
    for metric, found in importances.values.items():
        values = [found.get(p, 0.0) for p in params]
        fig.add_bar(y=params, x=values, orientation="h", name=metric, hoverinfo="text",
                    hovertext=[f"{html.escape(p)}<br>importance for {html.escape(metric)}: {v:.3f}"
                               for p, v in zip(params, values)])
    fig.update_layout(title={"text": "Hyperparameter importance for each objective (fANOVA)"}, barmode="group",
                      height=max(320, 120 + 40 * len(params) * max(1, len(importances.values)) ** 0.5),
                      xaxis={"title": {"text": "importance (sums to 1 per objective)"}, "range": [0, 1]},
                      yaxis={"autorange": "reversed"})
    return _div(fig, div_id)
