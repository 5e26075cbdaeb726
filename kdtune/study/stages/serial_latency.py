"""Stage: latency measured serially after the sweep, the teacher beside every finished student."""

from __future__ import annotations

from kdtune.evaluate import measure_latency
from kdtune.study._run import StudyRun

TEACHER = "__teacher__"


def measure(run: StudyRun) -> None:
    """Re-measure the latency (``latency/ms_b<batch>``) of the teacher and every finished student side by
    side, one at a time, in this process alone (in-trial latency only steered the search)."""
    models = {TEACHER: run.teacher.model.cpu(), **run.students}
    latency = measure_latency(models, run.data.input_shape, run.cfg.evaluation.latency)
    run.add_metrics(latency)
    run.teacher_metrics = {**run.teacher_metrics, **latency[TEACHER]}
