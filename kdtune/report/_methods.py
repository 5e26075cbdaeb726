"""The report's method-by-method section: per KD method searched, its best member's clean, PGD and AutoAttack
test accuracy as mean ± 95% interval over seeds, beside the papers' published CIFAR-10 figures (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from kdtune import metrics as vocab
from kdtune.records import Objective, TrialRecord
from kdtune.report._reference import PUBLISHED_CIFAR10
from kdtune.report._render import Block, Heading, Table, Text
from kdtune.report._tables import MISSING, format_mean_ci, format_metric

METHOD = "method.name"
PUBLISHED_NOTE = (
    "The papers' columns are CIFAR-10 at eps 8/255 with ResNet/WideResNet students and teachers, hundreds of "
    "epochs and the full AutoAttack: a source comparison, not a like-for-like one (the study's dataset, "
    "architectures, eps and budget differ). Empty cells were not transcribed from the source."
)


def method_blocks(records: Sequence[TrialRecord], objectives: Sequence[Objective],
                  metric_columns: Sequence[str]) -> list[Block]:
    """The section, when the study compares two or more methods (``method.name`` searched); else nothing."""
    selection = _selection(objectives)
    eps = _eps(metric_columns, selection)
    table = method_summary_table(records, objectives, eps=eps) if eps is not None else pd.DataFrame()
    if table.empty:
        return []
    direction = "highest" if selection.mode == "max" else "lowest"
    caption = (f"Per method, the member with the {direction} {selection.metric} (its mean over seeds where it was "
               f"repeated; selected on validation, never on test) and its test accuracy: clean, under PGD "
               f"(evaluation.pgd_steps steps, 20 by default as the papers' PGD-20) and under AutoAttack at eps {eps:g}, "
               "as mean ± half-width of the 95% t-interval over its seeds (one seed: the value alone). Clean and PGD "
               "are on the whole test split, AutoAttack on its first evaluation.autoattack.n_samples images; PGD on "
               "those same images stands beside it, to compare like with like.")
    return [Heading("Robust distillation, method by method"), Text(caption), Table(table), Text(PUBLISHED_NOTE)]


def method_summary_table(records: Sequence[TrialRecord], objectives: Sequence[Objective], *,
                         eps: float) -> pd.DataFrame:
    """One row per method among the COMPLETE trials (empty with fewer than two methods): its best member's
    seeds, clean / PGD / AutoAttack test accuracy, and the published CIFAR-10 figures of the method."""
    done = [r for r in records if r.status == "COMPLETE" and METHOD in r.params]
    methods = list(dict.fromkeys(str(r.params[METHOD]) for r in done))
    if len(methods) < 2:
        return pd.DataFrame()
    selection = _selection(objectives)
    names = [vocab.acc("test"), vocab.attacked_acc("test", eps), vocab.attacked_acc("test", eps, "autoattack")]
    same_images = vocab.attacked_acc(vocab.AA_SUBSET, eps)  # PGD on the images AutoAttack attacked
    rows = []
    for method in methods:
        best = _best([r for r in done if r.params[METHOD] == method], selection)
        seeds = int(best.metrics.get(vocab.SEEDS_DONE, 1))
        paper = PUBLISHED_CIFAR10.get(method)
        published = [paper.clean, paper.pgd20, paper.autoattack] if paper else [None] * 3
        rows.append([method, best.trial_id, seeds, *(_shown(best, n) for n in names), _shown(best, same_images),
                     *(format_metric(n, v) for n, v in zip(names, published)), paper.source if paper else MISSING])
    columns = ["method", "trial", "seeds", "clean", f"PGD @ {eps:g}", f"AutoAttack @ {eps:g}",
               "PGD, AutoAttack's images", "paper: clean", "paper: PGD-20", "paper: AutoAttack",
               "paper (CIFAR-10, eps 8/255)"]
    return pd.DataFrame(rows, columns=columns)


def _selection(objectives: Sequence[Objective]) -> Objective:
    """The objective a method's best member is chosen on: the first robust one on validation, else the first."""
    robust = [o for o in objectives if vocab.is_attacked_acc(o.metric, "val")]
    return robust[0] if robust else objectives[0]


def _eps(metric_columns: Sequence[str], selection: Objective) -> float | None:
    """The eps of the table: AutoAttack's (the first), else the selection objective's, else None."""
    for name in metric_columns:
        if vocab.is_attacked_acc(name, "test", "autoattack"):
            return vocab.Metric.parse(name).eps
    return vocab.Metric.parse(selection.metric).eps if vocab.is_attacked_acc(selection.metric, "val") else None


def _value(record: TrialRecord, name: str) -> float | None:
    """``name``'s mean over seeds where repeated, else its single value (None when missing)."""
    return record.metrics.get(vocab.mean_of(name), record.metrics.get(name))


def _best(candidates: list[TrialRecord], selection: Objective) -> TrialRecord:
    """Among the members repeated over seeds when any (else all), the best on ``selection`` (missing: worst)."""
    repeated = [r for r in candidates if vocab.SEEDS_DONE in r.metrics] or candidates
    sign = 1.0 if selection.mode == "max" else -1.0

    def score(record: TrialRecord) -> float:
        value = _value(record, selection.metric)
        return float("-inf") if value is None else sign * value

    return max(repeated, key=score)


def _shown(record: TrialRecord, name: str) -> str:
    mean = record.metrics.get(vocab.mean_of(name))
    if mean is None:
        return format_mean_ci(name, record.metrics.get(name), None)
    return format_mean_ci(name, mean, record.metrics.get(vocab.ci95_of(name)))
