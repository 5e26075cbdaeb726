"""Stage: latency measured serially after the sweep, the teacher beside every finished student."""

from __future__ import annotations

from kdtune.errors import KdtuneError
from kdtune.latency import measure_latency
from kdtune.onnx_latency import to_onnx
from kdtune.study._run import StudyRun

TEACHER = "__teacher__"


def measure(run: StudyRun) -> None:
    """Re-measure the latency (``latency/ms_b<batch>``, ``latency/spread_ms_b<batch>``) of the teacher and every
    finished student side by side, one at a time, in this process alone (in-trial latency only steered the
    search). Under runtime onnxruntime each is exported once, into ``run.onnx``, and timed from there."""
    spec, shape = run.cfg.evaluation.latency, run.data.input_shape
    models = {TEACHER: run.teacher.model.cpu(), **run.students}
    if spec.runtime == "onnxruntime":
        try:
            run.onnx = {name: to_onnx(_label(name), model, shape) for name, model in models.items()}
        except KdtuneError as err:
            raise KdtuneError(f"{err}; every trial is stored, so `kdtune report` then rebuilds the report") from None
        models = run.onnx
    latency = measure_latency(models, shape, spec)
    run.add_metrics(latency)
    run.teacher_metrics = {**run.teacher_metrics, **latency[TEACHER]}


def _label(name: str) -> str:
    """How a model of this stage is named to the user: ``teacher`` or ``trial <id>``."""
    return "teacher" if name == TEACHER else f"trial {name}"
