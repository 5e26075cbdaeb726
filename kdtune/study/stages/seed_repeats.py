"""Stage: each Pareto-front member retrained over more seeds (``evaluation.seeds``), as mean ± 95% interval."""

from __future__ import annotations

from kdtune import metrics
from kdtune.study._retrain import retrain
from kdtune.study._run import StudyRun


def repeat(run: StudyRun) -> None:
    """With ``evaluation.seeds`` = k > 1, each front member not yet repeated is retrained with seeds
    seed+1..seed+k-1 (serially); adds ``<metric>/mean`` and ``<metric>/ci95`` (``metrics.seed_summary``)."""
    k, seed = run.cfg.evaluation.seeds, run.cfg.seed
    on_front = run.front()
    todo = [r for r, f in zip(run.records, on_front)
            if f and r.status == "COMPLETE" and metrics.SEEDS_DONE not in r.metrics]
    if k <= 1 or not todo:
        return
    run.echo(f"repeating {len(todo)} front member(s) over {k} seeds")
    extra = {}
    for r in todo:
        runs = [r.metrics] + [retrain(run, r, seed=seed + i) for i in range(1, k)]
        extra[r.trial_id] = {metrics.SEEDS_DONE: float(k), **metrics.seed_summary(runs)}
    run.add_metrics(extra)
