"""``write_report``: a study's trials -> CSVs, front plots, report.md and report.html."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kdtune.errors import KdtuneError
from kdtune.pareto import usable_scale
from kdtune.records import Objective, Reference, TrialRecord
from kdtune.report import _tables
from kdtune.report._plots import front_plots
from kdtune.report._reference import reference_table
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
) -> dict[str, Path]:
    """Write trials.csv, pareto.csv, one front plot per pair of objectives, report.md, report.html.

    ``flags`` maps each checked model ("teacher" or a trial id) to its robustness sanity-check
    violations (``kdtune.robustness.masking_checks``); the report lists them when given.
    ``reference`` is the source document's own results, shown next to the matching trials.

    Returns {name: path} for everything written: ``trials_csv``, ``pareto_csv``, ``report_md``,
    ``report_html`` and each plot by its file stem (``front_val-acc__latency-ms_b1``).
    Raises KdtuneError (one line) if ``out_dir`` cannot be created or written.
    """
    if not objectives:
        raise ValueError("write_report needs at least one objective")
    out_dir = Path(out_dir)
    front = _tables.front_mask(records, objectives)
    trials = _tables.trials_frame(
        records, front, search_params=search_params, metric_columns=metric_columns
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {
            "trials_csv": _write_csv(trials, out_dir / "trials.csv"),
            "pareto_csv": _write_csv(trials[trials["pareto"]], out_dir / "pareto.csv"),
        }
        plots = front_plots(out_dir, records, front, objectives, teacher_metrics)
        blocks = _report_blocks(
            records, front, objectives, plots,
            search_params=search_params, teacher_metrics=teacher_metrics, meta=meta,
            metric_columns=metric_columns, flags=flags, reference=reference,
        )
        title = f"kdtune report: {study_name}"
        written["report_md"] = out_dir / "report.md"
        written["report_md"].write_text(to_markdown(title, blocks), encoding="utf-8")
        written["report_html"] = out_dir / "report.html"
        written["report_html"].write_text(to_html(title, blocks), encoding="utf-8")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise KdtuneError(
            f"cannot write the report into {out_dir}: {reason};"
            " pass an output directory you can create and write to"
        ) from err
    logger.info("wrote the report of %r to %s", study_name, out_dir)
    return {**written, **plots}


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _report_blocks(
    records: Sequence[TrialRecord],
    front: np.ndarray,
    objectives: Sequence[Objective],
    plots: dict[str, Path],
    *,
    search_params: Sequence[str],
    teacher_metrics: dict[str, float],
    meta: dict[str, str],
    metric_columns: Sequence[str],
    flags: dict[str, list[str]] | None = None,
    reference: Reference | None = None,
) -> list[Block]:
    n_failed = sum(r.status != "COMPLETE" for r in records)
    counts = (f"{len(records)} trials: {len(records) - n_failed} complete, {n_failed} failed,"
              f" {int(front.sum())} on the Pareto front.")
    goals = ", ".join(f"{o.metric} ({o.mode})" for o in objectives)
    blocks: list[Block] = [
        Facts(tuple((str(k), str(v)) for k, v in meta.items())),
        Text(counts),
        Text(f"Objectives: {goals}."),
        Heading("Hypervolume"),
        *_hypervolume_blocks(records, objectives, teacher_metrics),
        Heading("Teacher"),
        Table(_tables.teacher_table(teacher_metrics, metric_columns), "No teacher metrics recorded."),
        Heading("Pareto front"),
        Table(_tables.front_table(records, front, objectives, search_params=search_params,
                                  metric_columns=metric_columns), "No trial is on the front."),
        *_reference_blocks(reference, records, objectives, teacher_metrics),
        Heading("All trials"),
        Table(_tables.results_table(records, front, objectives, teacher_metrics=teacher_metrics,
                                    metric_columns=metric_columns, search_params=search_params)),
        Heading("Failed trials"),
        Table(_tables.failed_table(records), "None."),
        Heading("What each student learned from"),
        Text("Data-free methods train the student on a synthetic transfer set only; the last column says what, "
             "if anything, was taken from the real training images to build it."),
        Table(_tables.provenance_table(records), "No provenance recorded."),
    ]
    unscored = _tables.unscored_trials(records, objectives)
    if unscored:
        blocks.append(Text("Complete but without finite objective values (not eligible for the "
                           "front): " + "; ".join(unscored) + "."))
    if flags is not None:
        blocks += _flags_blocks(flags)
    blocks.append(Heading("Front plots"))
    pairs = itertools.combinations(objectives, 2)  # the order front_plots wrote them in
    blocks += [Image(f"{y.metric} vs {x.metric}", path)
               for (y, x), path in zip(pairs, plots.values(), strict=True)]
    if not plots:
        blocks.append(Text("A single objective: no pairwise plots."))
    return blocks


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


def _hypervolume_blocks(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], teacher_metrics: dict[str, float]
) -> list[Block]:
    value = _tables.hypervolume_of(records, objectives, teacher_metrics)
    convention = (
        "Computed on normalized objectives: 'max' objectives (accuracies) as is with reference 0,"
        " 'min' objectives divided by the teacher's value with reference 1, so the ideal box has"
        " volume 1 and a student adds volume only where it is faster/smaller than the teacher."
    )
    blocks: list[Block] = [Text(f"Hypervolume: {HYPERVOLUME_FORMAT.format(value)}. {convention}")]
    fallback = [o.metric for o in objectives
                if o.mode == "min" and not usable_scale(teacher_metrics.get(o.metric))]
    if fallback:
        blocks.append(Text("The teacher has no usable value for " + ", ".join(fallback)
                           + "; normalized by the max over trials instead."))
    return blocks
