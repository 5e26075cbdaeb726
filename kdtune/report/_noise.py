"""The report's comparisons over seeds (no I/O): which front members differ beyond seed noise, and whether
distillation paid against the same configuration trained without it."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from kdtune import metrics as vocab
from kdtune.intervals import Interval, within_noise
from kdtune.records import Ablation, Objective, TrialRecord
from kdtune.report._tables import MISSING, format_mean_ci

NOISE_NOTE = ("Two members whose 95% intervals over seeds overlap are marked 'within noise': their difference may"
              " be seed-to-seed variation, not a better configuration.")
ABLATION_NOTE = ("Each row: the member as distilled, and the same configuration trained with the ce method (no"
                 " teacher; architecture, recipe, penalties and adversarial training unchanged), both over the"
                 " same seeds. The difference is distilled minus ce, with the 95% t-interval of the per-seed"
                 " differences (paired by seed). 'paid' and 'cost' need the interval to exclude 0; otherwise a"
                 " plain small model did as well, within noise.")


def _interval(record: TrialRecord, name: str) -> Interval | None:
    mean, ci = record.metrics.get(vocab.mean_of(name)), record.metrics.get(vocab.ci95_of(name))
    if mean is None:
        return None
    n = int(record.metrics.get(vocab.SEEDS_DONE, 1))
    return Interval(mean, ci if ci is not None else float("nan"), n)


def _shown(name: str, interval: Interval | None) -> str:
    return MISSING if interval is None else format_mean_ci(name, interval.mean, interval.half_width)


def noise_table(records: Sequence[TrialRecord], objectives: Sequence[Objective]) -> pd.DataFrame:
    """Per objective, the members repeated over seeds from best mean to worst, each compared with the best
    and with the one ranked just above it: 'within noise' where the two 95% intervals overlap."""
    rows = []
    for objective in objectives:
        ranked = [(r, i) for r in records if (i := _interval(r, objective.metric)) is not None]
        ranked.sort(key=lambda ri: -ri[1].mean if objective.mode == "max" else ri[1].mean)
        for k, (record, interval) in enumerate(ranked):
            best, above = ranked[0][1], ranked[k - 1][1] if k else None
            rows.append([objective.metric, k + 1, record.trial_id, _shown(objective.metric, interval),
                         "best" if k == 0 else _verdict(interval, best),
                         MISSING if above is None else _verdict(interval, above)])
    return pd.DataFrame(rows, columns=["objective", "rank", "trial", "mean ± 95%", "vs the best", "vs the one above"])


def _verdict(interval: Interval, better: Interval) -> str:
    return "within noise" if within_noise(interval, better) else "worse, beyond noise"


def ablation_table(ablation: dict[str, Ablation], objectives: Sequence[Objective],
                   metric_columns: Sequence[str]) -> pd.DataFrame:
    """Each ablated member's objectives (and test accuracy): distilled, ce, their paired difference and what
    it says."""
    modes = {o.metric: o.mode for o in objectives}
    test_acc = vocab.acc("test")
    names = list(dict.fromkeys([*modes, *([test_acc] if test_acc in metric_columns else [])]))
    rows = []
    for trial_id, result in ablation.items():
        for name in names:
            diff = result.difference(name)
            rows.append([trial_id, name, len(result.seeds), _shown(name, result.arm(name, plain=False)),
                         _shown(name, result.arm(name, plain=True)), _shown(name, diff),
                         _paid(diff, modes.get(name, "max"))])
    columns = ["trial", "metric", "seeds", "distilled", "without distillation (ce)", "difference", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _paid(diff: Interval | None, mode: str) -> str:
    if diff is None or not diff.excludes_zero():
        return "within noise: a plain model did as well" if diff is not None else MISSING
    better = diff.mean > 0 if mode == "max" else diff.mean < 0
    return "distillation paid" if better else "distillation cost"
