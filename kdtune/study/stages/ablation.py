"""Stage: did distillation pay? The suggested pick (or every front member) against the same configuration
trained without distillation (the ``ce`` method), seed by seed (``evaluation.ablation``)."""

from __future__ import annotations

from kdtune import store
from kdtune.records import Ablation, TrialRecord
from kdtune.report import suggested_pick
from kdtune.study._retrain import PLAIN_METHOD, retrain, seed_runs, without_distillation
from kdtune.study._run import StudyRun


def ablate(run: StudyRun) -> None:
    """Fill ``run.ablation``: for each chosen member, its per-seed metrics beside those of its ``ce`` twin over
    the same seeds. Both arms are kept in the study's storage: a later run or ``kdtune report`` trains nothing
    already trained."""
    spec, cfg = run.cfg.evaluation.ablation, run.cfg
    if not spec.enabled:
        return
    members = [r for r in _members(run, every=spec.members == "front")
               if r.params.get("method.name", cfg.method.name) != PLAIN_METHOD]  # already without distillation
    seeds = [cfg.seed + i for i in range(cfg.evaluation.seeds)]
    stored = store.read_runs(run.optuna_study, "plain")
    todo = [r for r in members if len(stored.get(r.trial_id, [])) != len(seeds)]
    if todo:
        run.echo(f"ablation: {len(todo)} trial(s) trained again without distillation ({PLAIN_METHOD}) "
                 f"over {len(seeds)} seeds")
    for r in members:
        plain = stored.get(r.trial_id)
        if r in todo:
            plain = [retrain(run, r, seed=s, params=without_distillation(r.params)) for s in seeds]
            store.save_runs(run.optuna_study, "plain", r.trial_id, plain)
        run.ablation[r.trial_id] = Ablation(r.trial_id, seeds, seed_runs(run, r), plain)


def _members(run: StudyRun, *, every: bool) -> list[TrialRecord]:
    front = run.front()
    if every:
        return [r for r, f in zip(run.records, front) if f]
    feasible = run.feasibility.mask(run.records)
    pick = suggested_pick(run.records, run.cfg.objectives, run.teacher_metrics, front, feasible)
    return [] if pick is None else [run.records[pick]]

