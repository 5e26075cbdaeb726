"""Stage: the metrics measured after the sweep, kept per trial in the study's storage."""

from __future__ import annotations

from kdtune import metrics, store
from kdtune.study._run import StudyRun


def save(run: StudyRun) -> None:
    """Serial latency, AutoAttack and seed repeats of every trial into the study's storage, so a later run
    or ``kdtune report`` has them without measuring again (latency excepted: it is always re-measured)."""
    post = set(metrics.autoattack_metric_names(run.cfg.evaluation)) | {metrics.SEEDS_DONE}
    store.save_post_metrics(run.optuna_study, {r.trial_id: _post(r.metrics, post) for r in run.records})


def _post(measured: dict[str, float], post: set[str]) -> dict[str, float]:
    def after_sweep(name: str) -> bool:
        metric = metrics.Metric.parse(name)
        return metric.group in ("latency", metrics.AA_SUBSET) or name in post or metric.stat is not None

    return {k: v for k, v in measured.items() if after_sweep(k)}
