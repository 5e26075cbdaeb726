"""``write_report``: a study's trials -> CSVs, figures, report.md and report.html (interactive)."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kdtune.errors import KdtuneError
from kdtune import metrics as vocab  # metric names (a local "metrics" is a row's values)
from kdtune.feasibility import Feasibility
from kdtune.pareto import front_mask, usable_scale
from kdtune.records import Ablation, Objective, Reference, TrialRecord
from kdtune.report import _interactive, _noise, _tables
from kdtune.report._analysis import (
    KNEE_DEFINITION,
    Importances,
    Space,
    hypervolume_by_trial,
    knee_index,
    param_importances,
    share_metrics,
)
from kdtune.report._cost import cost_figure
from kdtune.report._drawing import Drawing
from kdtune.report._figures import Figures, drawn_apart, make_figures
from kdtune.report._methods import method_blocks
from kdtune.report._reference import reference_table
from kdtune.report._rungs import stopped_blocks
from kdtune.report._render import Block, Facts, Heading, Image, Table, Text, to_html, to_markdown

logger = logging.getLogger(__name__)

HYPERVOLUME_FORMAT = "{:.4f}"


def write_report(
    out_dir: Path,
    *,
    study_name: str,
    records: list[TrialRecord],
    objectives: list[Objective],
    search_params: list[str],
    teacher_metrics: dict[str, float],
    meta: dict[str, str],
    metric_columns: list[str],
    flags: dict[str, list[str]] | None = None,
    reference: Reference | None = None,
    study_path: str | None = None,
    onnx_files: dict[str, str] | None = None,
    teacher_onnx: str | None = None,
    interactive: bool = True,
    draw_apart: bool = False,
    ablation: dict[str, Ablation] | None = None,
    feasibility: Feasibility | None = None,
) -> dict[str, Path]:
    """Write trials.csv, pareto.csv, the PNG figures, report.md and report.html.

    ``records`` are in trial order (the hypervolume-by-trial figure relies on it). ``flags`` maps each
    checked model ("teacher" or a trial id) to its robustness sanity-check violations
    (``kdtune.robustness.masking_checks``); the report lists them when given. ``reference`` is the source
    document's own results, shown next to the matching trials. ``study_path`` is the study file the
    front table's ``kdtune rerun`` commands name (default: ``study_name``). ``onnx_files`` maps front members'
    trial ids to their ONNX files and ``teacher_onnx`` is the teacher's, relative to ``out_dir`` (written by
    the caller): the front table links each member's. ``interactive=False`` leaves
    plotly out of report.html (PNGs instead). ``draw_apart`` draws the front plots and the hypervolume by
    trial in a forked child meanwhile (``_drawing``): only for a single-threaded process, such as the
    report's own. ``ablation`` maps trial ids to their comparison with the same configuration trained
    without distillation (``evaluation.ablation``). ``feasibility`` (the study's constraints and majority-class
    floor) decides which trials may be on the front, in the hypervolume and picked; the others are greyed out
    in the plots.

    Returns {name: path} for everything written: ``trials_csv``, ``pareto_csv``, ``report_md``,
    ``report_html`` and each figure by its file stem (``front_val-acc__latency-ms_b1``, ``front_3d``,
    ``robust_acc_vs_eps``, ``hypervolume_by_trial``, ``hypervolume_by_cost``, ``importance``).
    Raises KdtuneError (one line) if ``out_dir`` cannot be created or written.
    """
    if not objectives:
        raise ValueError("write_report needs at least one objective")
    out_dir = Path(out_dir)
    feasibility = feasibility or Feasibility()
    feasible = feasibility.mask(records)
    front = front_mask(records, objectives, feasible)
    trials = _tables.trials_frame(
        records, front, search_params=search_params, metric_columns=metric_columns, feasible=feasible
    )
    space = Space.of(records, objectives, teacher_metrics, feasible)
    knee = knee_index(space, front)
    history = hypervolume_by_trial(space, len(records))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        apart = drawn_apart(out_dir, records, front, objectives, knee=knee, history=history,
                            teacher_metrics=teacher_metrics, feasible=feasible)
        with Drawing(apart, fork=draw_apart) as drawing:  # meanwhile: the rest; leaving waits for it
            written = {
                "trials_csv": _write_csv(trials, out_dir / "trials.csv"),
                "pareto_csv": _write_csv(trials[trials["pareto"]], out_dir / "pareto.csv"),
            }
            importances = param_importances(records, objectives, search_params)
            figures = make_figures(
                out_dir, records, front, objectives, knee=knee, history=history, importances=importances,
                search_params=search_params, teacher_metrics=teacher_metrics, interactive=interactive,
                drawn=drawing.paths, feasible=feasible,
            )
            figures.cost, cost_png = cost_figure(out_dir, records, space)
            figures.paths.update(cost_png)
            context = _Context(records, front, objectives, space, knee, history, feasible, feasibility,
                               search_params=search_params,
                               teacher_metrics=teacher_metrics, metric_columns=metric_columns,
                               rerun=f"python -m kdtune rerun {shlex.quote(study_path or study_name)}",
                               onnx_files=onnx_files or {}, teacher_onnx=teacher_onnx)
            blocks = _report_blocks(context, figures, importances, meta=meta, flags=flags, reference=reference,
                                    ablation=ablation)
            title = f"kdtune report: {study_name}"
            written["report_md"] = out_dir / "report.md"
            written["report_md"].write_text(to_markdown(title, blocks), encoding="utf-8")
            written["report_html"] = out_dir / "report.html"
            plotly_js = _interactive.plotly_js() if any(isinstance(b, Image) and b.html for b in blocks) else None
            written["report_html"].write_text(to_html(title, blocks, plotly_js=plotly_js), encoding="utf-8")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise KdtuneError(
            f"cannot write the report into {out_dir}: {reason};"
            " pass an output directory you can create and write to"
        ) from err
    logger.info("wrote the report of %r to %s", study_name, out_dir)
    return {**written, **figures.paths}


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@dataclass(frozen=True, eq=False)
class _Context:
    """What every section of the report reads."""

    records: Sequence[TrialRecord]
    front: np.ndarray
    objectives: Sequence[Objective]
    space: Space
    knee: int | None
    history: np.ndarray  # (n,): the hypervolume of the first k trials
    feasible: np.ndarray  # (n,) bool: complete and meeting every constraint and the majority-class floor
    feasibility: Feasibility
    search_params: Sequence[str]
    teacher_metrics: dict[str, float]
    metric_columns: Sequence[str]
    rerun: str
    onnx_files: dict[str, str]  # front member -> its ONNX file, relative to the report
    teacher_onnx: str | None


def _report_blocks(
    c: _Context,
    figures: Figures,
    importances: Importances,
    *,
    meta: dict[str, str],
    flags: dict[str, list[str]] | None = None,
    reference: Reference | None = None,
    ablation: dict[str, Ablation] | None = None,
) -> list[Block]:
    n_failed, n_pruned = (sum(r.status == s for r in c.records) for s in ("FAILED", "PRUNED"))
    n_complete = len(c.records) - n_failed - n_pruned
    n_infeasible = n_complete - int(c.feasible.sum())
    stopped = f" {n_pruned} stopped early," if n_pruned else ""
    counts = (f"{len(c.records)} trials: {n_complete} complete,{stopped} {n_failed} failed,"
              f" {n_infeasible} infeasible, {int(c.front.sum())} on the Pareto front.")
    goals = ", ".join(f"{o.metric} ({o.mode})" for o in c.objectives)
    blocks: list[Block] = [
        Facts(tuple((str(k), str(v)) for k, v in meta.items())),
        Text(counts),
        Text(f"Objectives: {goals}."),
        *([Text(_pick_line(c))] if c.knee is not None else []),
        *_feasibility_blocks(c, n_infeasible),
        Heading("Hypervolume"),
        *_hypervolume_blocks(c, figures),
        Heading("Teacher"),
        Table(_tables.teacher_table(c.teacher_metrics, c.metric_columns), "No teacher metrics recorded."),
        *([Text(f"The teacher as ONNX, as its latency was timed: {c.teacher_onnx}")] if c.teacher_onnx else []),
        *_front_blocks(c),
        *_seed_blocks(c),
        *method_blocks(c.records, c.objectives, c.metric_columns),  # two or more methods searched
        *_ablation_blocks(c, ablation),
        Heading("Front plots"),
        *figures.fronts,
        *([] if figures.fronts else [Text("A single objective: no pairwise plots.")]),
        Heading("Robust accuracy against ε"),
        *_robust_blocks(figures),
        Heading("Hyperparameter importance"),
        Text(importances.note),
        *([figures.importance] if figures.importance else []),
        *_reference_blocks(reference, c.records, c.objectives, c.teacher_metrics),
        Heading("All trials"),
        Table(_tables.results_table(c.records, c.front, c.objectives, teacher_metrics=c.teacher_metrics,
                                    metric_columns=c.metric_columns, search_params=c.search_params)),
        Heading("Failed trials"),
        Table(_tables.failed_table(c.records), "None."),
        *stopped_blocks(c.records, c.objectives),
        Heading("What each student learned from"),
        Text("Data-free methods train the student on a synthetic transfer set only; the last column says what, "
             "if anything, was taken from the real training images to build it."),
        Table(_tables.provenance_table(c.records), "No provenance recorded."),
    ]
    if flags is not None:
        blocks += _flags_blocks(flags)
    return blocks


def _seed_blocks(c: _Context) -> list[Block]:
    """Members retrained over several seeds (``evaluation.seeds``): mean ± 95% interval, and which
    differences between them are within noise."""
    table = _tables.seeds_table(c.records, c.objectives, c.metric_columns)
    if table.empty:
        return []
    n = int(max(r.metrics.get(vocab.SEEDS_DONE, 0) for r in c.records))
    repeated = [r for r in c.records if vocab.SEEDS_DONE in r.metrics]
    return [Heading("Over seeds"),
            Text(f"{len(repeated)} member(s) retrained with {n} seeds (the trial's own and the next {n - 1}); "
                 "mean ± half-width of the 95% t-interval."), Table(table),
            Text(_noise.NOISE_NOTE), Table(_noise.noise_table(repeated, c.objectives))]


def _ablation_blocks(c: _Context, ablation: dict[str, Ablation] | None) -> list[Block]:
    """Did distillation pay: each ablated member against its ce twin (``evaluation.ablation``)."""
    if ablation is None:
        return []
    blocks: list[Block] = [Heading("Did distillation pay?")]
    if not ablation:
        return [*blocks, Text("Nothing to compare: no front member uses distillation (or no front).")]
    table = _noise.ablation_table(ablation, c.objectives, c.metric_columns)
    return [*blocks, Text(_noise.ABLATION_NOTE), Table(table)]


def _pick_line(c: _Context) -> str:
    """"Suggested pick: trial X — why", for the top of the report."""
    r = c.records[c.knee]
    values = ", ".join(f"{o.metric} {_tables.format_metric(o.metric, r.metrics.get(o.metric))}" for o in c.objectives)
    ranked = _ranked_front(c)
    runner_up = f", runner-up {ranked[1][0]} at {ranked[1][1]:.3f}" if len(ranked) > 1 else ""
    return (f"Suggested pick: trial {r.trial_id} — of the {int(c.front.sum())} Pareto-front members it is the"
            f" closest to the ideal point (distance {ranked[0][1]:.3f}{runner_up}; see 'Suggested pick'): {values}."
            f" Retrain it with: {c.rerun} {shlex.quote(r.trial_id)}")


def _ranked_front(c: _Context) -> list[tuple[str, float]]:
    """(trial id, distance to the ideal point) of the front members, the pick first, then closest first."""
    distances = c.space.distances()
    members = [int(i) for i in np.flatnonzero(c.front) if int(i) in distances]
    members.sort(key=lambda i: (i != c.knee, distances[i]))
    return [(c.records[i].trial_id, distances[i]) for i in members]


def _ranking_text(c: _Context) -> str:
    ranked = _ranked_front(c)
    closest = ", ".join(f"{trial} ({distance:.3f})" for trial, distance in ranked[:3])
    text = f"Closest to the ideal point: {closest}."
    if len(ranked) > 1 and ranked[1][1] - ranked[0][1] < 0.01:
        text += (" The first two are within 0.01 of each other, nearly a tie: weigh what the objectives leave"
                 " out (size, test metrics, robustness at other ε) in the front table above.")
    return text


def _front_blocks(c: _Context) -> list[Block]:
    shares = share_metrics(c.objectives, c.metric_columns)
    table = _tables.front_table(
        c.records, c.front, c.objectives, search_params=c.search_params, metric_columns=c.metric_columns,
        teacher_metrics=c.teacher_metrics, shares=shares if c.teacher_metrics else (),
        distances=c.space.distances(), knee=c.knee, rerun=c.rerun, files=c.onnx_files or None,
    )
    explained = ("Each front member with its searched hyperparameters, validation and test metrics, size and"
                 " latency; '% of teacher' is the share of the teacher's value it keeps (above 100%: better than"
                 " the teacher); 'distance to ideal' ranks the members for the suggested pick; 'rerun' retrains"
                 " the trial and compares its metrics with the stored ones.")
    if any(vocab.latency_batch(o.metric) is not None for o in c.objectives):
        explained += (" Dominance is noise-aware on latency: two trials whose latencies differ by no more than the"
                      " larger of their spreads (the range of the per-repeat figures, see the latency protocol)"
                      " are tied on it, so a few nanoseconds never buy a place on the front.")
    if c.onnx_files:
        explained += f" '{_tables.ONNX_COLUMN}' is the member as ONNX, the file whose latency was timed."
    blocks: list[Block] = [Heading("Pareto front"), Text(explained),
                           Table(table, _no_front(c), code_columns=("rerun",),
                                 link_columns=(_tables.ONNX_COLUMN,))]
    unscored = _tables.unscored_trials(c.records, c.objectives)
    if unscored:
        blocks.append(Text("Complete but without finite objective values (not eligible for the "
                           "front): " + "; ".join(unscored) + "."))
    blocks += [Heading("Suggested pick"), Text(KNEE_DEFINITION)]
    why = "no trial is feasible" if _none_feasible(c) else "no trial is on the front"
    blocks.append(Text(_ranking_text(c) if c.knee is not None else f"No suggestion: {why}."))
    return blocks


def _none_feasible(c: _Context) -> bool:
    return any(r.status == "COMPLETE" for r in c.records) and not c.feasible.any()


def _no_front(c: _Context) -> str:
    if _none_feasible(c):
        return "No trial is feasible (see 'Feasibility'): there is no front to present."
    return "No trial is on the front."


def _feasibility_blocks(c: _Context, n_infeasible: int) -> list[Block]:
    """The constraints and the majority-class floor, what they removed, and whether anything is left."""
    f = c.feasibility
    bounds = "; ".join(str(b) for b in f.constraints) or "none (search.constraints)"
    floor = ("not known for this study (no validation labels recorded), so not applied" if f.floor is None else
             f"val/acc must exceed {f.majority_rate:.4g}, the share of the validation split's most frequent label"
             " (what always guessing it scores)")
    n_complete = sum(r.status == "COMPLETE" for r in c.records)
    text = (f"Constraints: {bounds}. Majority-class floor: {floor}. {n_infeasible} of {n_complete} complete trials"
            " are infeasible: they are never on the front nor in the hypervolume, and the plots grey them out.")
    blocks: list[Block] = [Heading("Feasibility"), Text(text)]
    if _none_feasible(c):
        blocks.append(Text("No trial is feasible: there is no Pareto front, no hypervolume and no suggested pick."
                           " Loosen search.constraints, or find out why the students fail (All trials)."))
    table = _tables.infeasible_table(c.records, c.feasible, f.all)
    return [*blocks, *([Table(table)] if not table.empty else [])]


def _robust_blocks(figures: Figures) -> list[Block]:
    if figures.robust is None:
        return [Text("No test robust accuracies (test/robust_acc@<eps>) measured on the front: no curves.")]
    return [Text("Test accuracy under attack as ε grows, for each front member and the teacher; ε = 0 is the"
                 " clean test accuracy. The suggested pick is drawn thick."), figures.robust]


def _reference_blocks(
    reference: Reference | None,
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    teacher_metrics: dict[str, float],
) -> list[Block]:
    if reference is None:
        return []
    table = reference_table(reference, records, objectives, teacher_metrics)
    return [Heading("Against the source"), Text(f"Source: {reference.source}"), Table(table)]


def _flags_blocks(flags: dict[str, list[str]]) -> list[Block]:
    checks = (
        "Gradient-masking sanity checks (arXiv:1902.06705) on the test split, each with a small tolerance:"
        " accuracy under PGD, FGSM and AutoAttack does not rise with ε; PGD is no weaker than FGSM and"
        " AutoAttack no weaker than PGD at the same ε; no robust accuracy exceeds clean accuracy."
    )
    n_flagged = sum(bool(found) for found in flags.values())
    return [
        Heading("Robustness sanity checks"),
        Text(f"{checks} {n_flagged} of {len(flags)} models flagged."),
        Table(_tables.flags_table(flags), f"None flagged: all {len(flags)} models pass."),
    ]


def _hypervolume_blocks(c: _Context, figures: Figures) -> list[Block]:
    value = c.space.hypervolume()
    convention = (
        "Computed on normalized objectives: 'max' objectives (accuracies) as is with reference 0,"
        " 'min' objectives divided by the teacher's value with reference 1, so the ideal box has"
        " volume 1 and a student adds volume only where it is faster/smaller than the teacher."
    )
    blocks: list[Block] = [Text(f"Hypervolume: {HYPERVOLUME_FORMAT.format(value)}. {convention}")]
    fallback = [o.metric for o in c.objectives
                if o.mode == "min" and not usable_scale(c.teacher_metrics.get(o.metric))]
    if fallback:
        blocks.append(Text("The teacher has no usable value for " + ", ".join(fallback)
                           + "; normalized by the max over trials instead."))
    if figures.hypervolume is not None:
        blocks += [Text(_progress(c.history, c.records)), figures.hypervolume]
    return blocks + figures.cost


def _progress(history: np.ndarray, records: Sequence[TrialRecord]) -> str:
    """Whether the search still improves: when the hypervolume last grew, and what the last quarter added."""
    gains = np.diff(np.concatenate([[0.0], history]))
    grew = np.flatnonzero(gains > 1e-12)
    if not len(grew):
        return "No trial adds hypervolume: none improves on the reference in every objective."
    n, final, last = len(history), float(history[-1]), int(grew[-1])
    window = max(1, n // 4)
    recent = final - (float(history[n - window - 1]) if n > window else 0.0)
    verdict = ("still improving: more trials may move the front" if recent > 0.01 * final
               else "levelling off: more trials of this search space are unlikely to move the front much")
    return (f"The hypervolume of the first k trials, for each k: it last grew at trial #{last + 1} of {n}"
            f" ({records[last].trial_id}); the last {window} trials added {recent:.4f}"
            f" ({100 * recent / final:.1f}% of the final value). The search is {verdict}.")
