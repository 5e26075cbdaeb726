"""The source comparison: each result a source document reports, next to kdtune's matching trial."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from kdtune.records import Objective, Reference, ReferenceRow, TrialRecord
from kdtune.report._tables import MISSING, format_metric, format_param


def matching(row: ReferenceRow, records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """COMPLETE trials whose searched values equal every value in ``row.match``."""
    return [
        r for r in records
        if r.status == "COMPLETE" and all(_same(r.params.get(k), v) for k, v in row.match.items())
    ]


def _same(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def reference_table(
    reference: Reference,
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    teacher_metrics: dict[str, float],
) -> pd.DataFrame:
    """One row per source result: kdtune's value and the source's for every metric the source gives.

    Where several trials match (a sampled, not a grid, study), the best on the first objective is shown
    and the count says how many matched.
    """
    metrics = list(dict.fromkeys(m for row in reference.rows for m in row.metrics))
    rows = []
    for row in reference.rows:
        if row.teacher:
            ours, trial, count = teacher_metrics, "teacher", "–"
        else:
            found = matching(row, records)
            best = _best(found, objectives[0]) if found else None
            ours = best.metrics if best else {}
            trial, count = (best.trial_id if best else MISSING), str(len(found))
        cells = []
        for m in metrics:
            cells += [format_metric(m, ours.get(m)), format_metric(m, row.metrics.get(m))]
        rows.append([row.label, ", ".join(f"{k}={format_param(v)}" for k, v in row.match.items()), trial, count, *cells])
    headers = ["source result", "settings", "kdtune trial", "matching trials"]
    for m in metrics:
        headers += [f"{m} (kdtune)", f"{m} (source)"]
    return pd.DataFrame(rows, columns=headers)


def _best(found: list[TrialRecord], first: Objective) -> TrialRecord:
    sign = 1.0 if first.mode == "max" else -1.0
    return max(found, key=lambda r: sign * r.metrics.get(first.metric, float("-inf") * sign))


@dataclass(frozen=True)
class Published:
    """A robust method's published CIFAR-10 (L-inf, eps 8/255) test accuracies, as shares; None: not transcribed."""

    clean: float | None
    pgd20: float | None
    autoattack: float | None
    source: str


# Only figures read from the source named beside them; the others stay empty (MISSING) until transcribed.
PUBLISHED_CIFAR10: dict[str, Published] = {
    "trades": Published(0.8492, 0.5661, 0.5308, "TRADES, WRN-34-10, no teacher; clean and PGD-20 (FGSM^20 there):"
                        " the paper and github.com/yaodongyu/TRADES's leaderboard, AutoAttack its entry"),
    "adaad": Published(None, None, 0.5423, "AdaAD (Huang et al., CVPR 2023), ResNet-18 student: AutoAttack on"
                       " RobustBench as its abstract reports"),
    "ard": Published(None, None, None, "ARD (Goldblum et al., AAAI 2020, arXiv:1905.09747): not transcribed"),
    "rslad": Published(None, None, None, "RSLAD (Zi et al., ICCV 2021, arXiv:2108.07969): not transcribed"),
    "iad": Published(None, None, None, "IAD (Zhu et al., ICLR 2022, arXiv:2106.04928): not transcribed"),
}
