"""Stage: Pareto-front members (or every trial) retrained over more seeds (``evaluation.seeds``), as mean ± 95%
interval."""

from __future__ import annotations

from kdtune import metrics
from kdtune.study._retrain import seed_runs
from kdtune.study._run import StudyRun


def repeat(run: StudyRun) -> None:
    """With ``evaluation.seeds`` = k > 1, each front member (``seed_members: all``: each complete trial) not yet
    repeated is retrained with seeds seed+1..seed+k-1 (serially); adds ``<metric>/mean`` and ``<metric>/ci95``
    (``metrics.seed_summary``) and keeps the per-seed metrics in the study's storage (the ablation pairs them)."""
    spec = run.cfg.evaluation
    chosen = run.front() if spec.seed_members == "front" else [True] * len(run.records)
    todo = [r for r, f in zip(run.records, chosen)
            if f and r.status == "COMPLETE" and metrics.SEEDS_DONE not in r.metrics]
    if spec.seeds <= 1 or not todo:
        return
    who = "front member" if spec.seed_members == "front" else "trial"
    run.echo(f"repeating {len(todo)} {who}(s) over {spec.seeds} seeds")
    run.add_metrics({r.trial_id: _summary(seed_runs(run, r)) for r in todo})


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """``seeds/n`` and each metric's mean and 95% interval half-width over ``runs``."""
    return {metrics.SEEDS_DONE: float(len(runs)), **metrics.seed_summary(runs)}
