"""Stage: the post-sweep metrics and the Pareto front's students into MLflow."""

from __future__ import annotations

from kdtune import metrics
from kdtune.study._run import StudyRun


def log(run: StudyRun) -> None:
    """Serial latency (its spread and ONNX check too) and AutoAttack metrics into each complete trial's run (at
    step epochs + 1) and the teacher's into the parent run (``teacher/...``); the front members also as loadable PyTorch models
    with an input signature (each trial's weights were logged when it finished, ``sweep.TrackingCallback``)
    and, under runtime onnxruntime, as the ONNX models that were timed (artifact ``onnx``)."""
    tracker, cfg = run.tracker, run.cfg
    robust = metrics.autoattack_metric_names(cfg.evaluation)  # [] unless AutoAttack is enabled
    tracker.log_metrics(None, {f"teacher/{k}": v for k, v in run.teacher_metrics.items()
                               if metrics.is_latency(k) or k in robust})
    for r in run.records:
        if r.status == "COMPLETE":
            post = {k: v for k, v in r.metrics.items() if metrics.is_latency(k) or k in robust}
            tracker.log_metrics(r.trial_id, post, step=cfg.student.epochs + 1)
    example = run.data.val.head(2).x.cpu().numpy()  # (2, C, H, W) float32 pixels in [0, 1]
    for r, on_front in zip(run.records, run.front()):
        if on_front and r.trial_id in run.students:  # a trial without an MLflow run is skipped by log_model
            tracker.log_model(r.trial_id, run.students[r.trial_id].eval(), example)
            if r.trial_id in run.onnx:
                tracker.log_onnx_model(r.trial_id, run.onnx[r.trial_id].file.data, example)
