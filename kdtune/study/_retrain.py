"""One stored trial trained again without Ray: ``kdtune rerun`` and the seed repeats."""

from __future__ import annotations

import torch

from kdtune.config import with_overrides
from kdtune.latency import measure_latency
from kdtune.methods import MethodContext
from kdtune.records import TrialRecord
from kdtune.student import run_student
from kdtune.study._run import StudyRun
from kdtune.teacher import frozen


def retrain(run: StudyRun, record: TrialRecord, *, seed: int | None = None) -> dict[str, float]:
    """``record``'s configuration trained again (its own seed unless ``seed`` is given) and evaluated,
    latency included. Training uses the trial's thread count, so accuracies reproduce."""
    overrides = record.params if seed is None else {**record.params, "seed": seed}
    cfg = with_overrides(run.cfg, overrides)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))  # as the trial ran: same arithmetic order
    ctx = MethodContext(
        data=run.data, teacher=frozen(run.teacher.model, "cpu"), teacher_logits=run.teacher_logits,
        student_spec=cfg.student, seed=cfg.seed, cache=run.paths.cache,
    )
    result = run_student(cfg, ctx)
    latency = measure_latency({"student": result.student}, run.data.input_shape, cfg.evaluation.latency)["student"]
    return {**result.metrics, **latency}
