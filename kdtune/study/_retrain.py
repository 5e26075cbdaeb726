"""One stored trial trained again without Ray: ``kdtune rerun``, the seed repeats and the ablation."""

from __future__ import annotations

from typing import Any

import torch

from kdtune import metrics, store
from kdtune.config import with_overrides
from kdtune.latency import measure_latency
from kdtune.methods import MethodContext
from kdtune.records import TrialRecord
from kdtune.robustness import autoattack_metrics
from kdtune.student import run_student
from kdtune.study._run import StudyRun
from kdtune.teacher import frozen

PLAIN_METHOD = "ce"  # the ablation's method: no teacher


def retrain(
    run: StudyRun, record: TrialRecord, *, seed: int | None = None, params: dict[str, Any] | None = None,
    autoattack: bool = False,
) -> dict[str, float]:
    """``record``'s configuration (or ``params`` in place of its searched values) trained again, with its own
    seed unless ``seed`` is given, and evaluated, latency included (and AutoAttack, as its stage measures
    it, with ``autoattack``). Training uses the trial's thread count, so accuracies reproduce."""
    overrides = dict(record.params if params is None else params)
    if seed is not None:
        overrides["seed"] = seed
    cfg = with_overrides(run.cfg, overrides)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))  # as the trial ran: same arithmetic order
    ctx = MethodContext(
        data=run.data, teacher=frozen(run.teacher.model, "cpu"), teacher_logits=run.teacher_logits,
        student_spec=cfg.student, seed=cfg.seed, cache=run.paths.cache,
    )
    result = run_student(cfg, ctx)
    latency = measure_latency({"student": result.student}, run.data.input_shape, cfg.evaluation.latency)["student"]
    attacked = autoattack_metrics(result.student.cpu(), run.data.test, cfg.evaluation, n_classes=run.data.n_classes,
                                  seed=cfg.seed) if autoattack else {}
    return {**result.metrics, **latency, **attacked}


def seed_runs(run: StudyRun, record: TrialRecord) -> list[dict[str, float]]:
    """``record``'s metrics with each of the study's seeds (its own first), retrained where not stored. A member
    AutoAttack measured (its stage runs first) is AutoAttacked again with each seed, so that its AutoAttack
    accuracy too has a mean and an interval."""
    stored = store.read_runs(run.optuna_study, "seeds").get(record.trial_id)
    if stored is not None and len(stored) == run.cfg.evaluation.seeds:
        return stored
    seed, spec = run.cfg.seed, run.cfg.evaluation.autoattack
    attack = spec.enabled and bool(spec.eps) and metrics.attacked_acc("test", spec.eps[-1], "autoattack") in record.metrics
    runs = [record.metrics] + [retrain(run, record, seed=seed + i, autoattack=attack)
                               for i in range(1, run.cfg.evaluation.seeds)]
    store.save_runs(run.optuna_study, "seeds", record.trial_id, runs)
    return runs


def without_distillation(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's searched values with the method switched to ``ce``: the method's own hyperparameters go
    (``ce`` has none), everything else (architecture, recipe, penalties, adversarial training) stays."""
    kept = {k: v for k, v in params.items() if not k.startswith("method.")}
    return {**kept, "method.name": PLAIN_METHOD}
