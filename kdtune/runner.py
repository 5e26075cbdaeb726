"""A whole study, in order: data -> teacher (once) -> sweep -> serial latency -> report -> MLflow.

Nothing here imports ray or mlflow directly: those live in ``study`` and ``tracking``.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kdtune.config import StudyConfig
from kdtune.data import Dataset, load_dataset
from kdtune.evaluate import evaluate_model, measure_latency, metric_names
from kdtune.models import build_model
from kdtune.records import TrialRecord
from kdtune.report import hypervolume_of, write_report
from kdtune.teacher import Teacher, cache_dir, load_or_train_teacher
from kdtune.tracking import Tracker, default_uri
from kdtune.train import logits_of
from kdtune.trainable import STUDENT_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    records: list[TrialRecord]
    report: dict[str, Path]
    hypervolume: float
    teacher_metrics: dict[str, float]
    run_name: str


def run_study(
    cfg: StudyConfig,
    *,
    workdir: Path | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
) -> StudyOutcome:
    """Run ``cfg`` end to end; every path is resolved against ``workdir`` (default: cwd)."""
    from kdtune import study  # ray is imported only when a sweep actually runs

    workdir = (workdir or Path.cwd()).resolve()
    start = time.monotonic()
    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    echo(f"dataset {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    teacher = load_or_train_teacher(cfg.teacher, data, seed=cfg.seed, root=cache_dir(cfg.output.cache))
    echo(f"teacher {'loaded from cache' if teacher.from_cache else 'trained and cached'}: {teacher.path}")
    teacher_metrics = evaluate_model(teacher.model, data, cfg.evaluation, seed=cfg.seed)
    echo(f"teacher val/acc={teacher_metrics['val/acc']:.4f} test/acc={teacher_metrics['test/acc']:.4f}")

    run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracker = Tracker(
        default_uri(cfg.tracking.uri, workdir), cfg.tracking.experiment or cfg.name,
        artifact_root=workdir / "mlartifacts",
    )
    tracker.start_sweep(run_name, _flatten_top(cfg), {"study": cfg.name, "kind": "sweep"})
    tracker.log_metrics(None, {f"teacher/{k}": v for k, v in teacher_metrics.items()})
    status = "FAILED"
    try:
        study.init_ray(address)
        callbacks = [study.TrackingCallback(tracker, cfg), study.ProgressCallback(cfg, echo)]
        records = study.run_sweep(
            cfg, data, teacher.model, logits_of(teacher.model, data.train.x),
            storage=workdir / cfg.output.ray, run_name=run_name, callbacks=callbacks,
        )
        records, teacher_metrics = _serial_latency(cfg, data, teacher, records, teacher_metrics)
        for r in records:
            if r.status == "COMPLETE":
                tracker.log_metrics(r.trial_id, {k: v for k, v in r.metrics.items() if k.startswith("latency/")}, step=cfg.student.epochs + 1)
                tracker.log_artifacts(r.trial_id, [Path(r.checkpoint) / STUDENT_FILE] if r.checkpoint else [])
        out_dir = workdir / cfg.output.reports / cfg.name
        paths = write_report(
            out_dir, study_name=cfg.name, records=records, objectives=cfg.objectives,
            search_params=list(cfg.search.space), teacher_metrics=teacher_metrics,
            meta=_meta(cfg, data, run_name, time.monotonic() - start), metric_columns=metric_names(cfg.evaluation),
        )
        hv = hypervolume_of(records, cfg.objectives, teacher_metrics)
        _tag_front(tracker, paths)
        tracker.log_metrics(None, {"pareto/hypervolume": hv})
        tracker.log_artifacts(None, [out_dir], artifact_path="report")
        status = "FINISHED"
    finally:
        tracker.end_sweep(status)
    return StudyOutcome(records, paths, hv, teacher_metrics, run_name)


def _serial_latency(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, records: list[TrialRecord], teacher_metrics: dict[str, float]
) -> tuple[list[TrialRecord], dict[str, float]]:
    """Re-measure the latency of the teacher and every finished student side by side, one at a time."""
    models = {"__teacher__": teacher.model.cpu()}
    for r in records:
        if r.status == "COMPLETE" and r.checkpoint:
            spec = cfg.with_overrides(r.params).student.model
            student = build_model(spec.name, spec.params, data.info)
            student.load_state_dict(torch.load(Path(r.checkpoint) / STUDENT_FILE, map_location="cpu", weights_only=True))
            models[r.trial_id] = student
    latency = measure_latency(models, data.input_shape, cfg.evaluation.latency)
    updated = [
        dataclasses.replace(r, metrics={**r.metrics, **latency[r.trial_id]}) if r.trial_id in latency else r
        for r in records
    ]
    return updated, {**teacher_metrics, **latency["__teacher__"]}


def _tag_front(tracker: Tracker, paths: dict[str, Path]) -> None:
    import pandas as pd

    trials = pd.read_csv(paths["trials_csv"], dtype={"trial_id": str})
    for trial_id, on_front in zip(trials["trial_id"], trials["pareto"]):
        tracker.set_tags(str(trial_id), {"pareto": str(bool(on_front)).lower()})


def _flatten_top(cfg: StudyConfig) -> dict[str, str]:
    raw = cfg.to_raw()
    return {k: str(v) for k, v in raw.items() if k not in ("search",)} | {"search": str(raw["search"])}


def _meta(cfg: StudyConfig, data: Dataset, run_name: str, seconds: float) -> dict[str, str]:
    lat = cfg.evaluation.latency
    return {
        "study": cfg.name,
        "description": cfg.description,
        "run": run_name,
        "dataset": f"{data.name} ({len(data.train)} train / {len(data.val)} val / {len(data.test)} test)",
        "objectives": ", ".join(f"{o.metric} ({o.mode})" for o in cfg.search.objectives) + " on the validation split",
        "sampler": f"{cfg.search.sampler.name}, {cfg.search.n_trials} trials, seed {cfg.seed}",
        "machine": f"{platform.machine()} {platform.processor() or ''} ({torch.get_num_threads()} torch threads available), "
        f"Python {sys.version.split()[0]}, torch {torch.__version__}",
        "latency protocol": f"measured serially after the sweep on the CPU: 1 thread, inference mode, {lat.warmup} warm-up "
        f"calls per model and batch size, {lat.repeats} interleaved repeats of {lat.n_calls} timed calls, "
        "median of per-call times",
        "wall time": f"{seconds:.0f} s",
    }
