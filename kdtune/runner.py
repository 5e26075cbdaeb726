"""A whole study, in order: data -> teacher (once) -> sweep -> serial latency -> AutoAttack and
gradient-masking checks -> report -> MLflow.

Nothing here imports ray or mlflow directly: those live in ``study`` and ``tracking``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdtune.attacks import pgd
from kdtune.config import StudyConfig
from kdtune.data import Dataset, load_dataset
from kdtune.evaluate import accuracy, eps_name, evaluate_model, measure_latency, metric_names, robust_accuracy
from kdtune.models import build_model
from kdtune.records import TrialRecord
from kdtune.report import hypervolume_of, write_report
from kdtune.report._tables import front_mask
from kdtune.robustness import (
    AUTOATTACK_BUDGET,
    autoattack_accuracy,
    autoattack_metric,
    autoattack_metric_names,
    masking_checks,
)
from kdtune.teacher import Teacher, cache_dir, load_or_train_teacher
from kdtune.tracking import Tracker, default_uri
from kdtune.train import logits_of
from kdtune.trainable import STUDENT_FILE

log = logging.getLogger(__name__)
AA_SUBSET = "test_autoattack_images"  # metrics measured on the images AutoAttack attacks


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
        records, teacher_metrics, flags = _after_sweep(cfg, data, teacher, records, teacher_metrics, echo)
        _log_after_sweep(tracker, cfg, records, teacher_metrics)
        out_dir = workdir / cfg.output.reports / cfg.name
        paths = write_report(
            out_dir, study_name=cfg.name, records=records, objectives=cfg.objectives,
            search_params=list(cfg.search.space), teacher_metrics=teacher_metrics,
            meta=_meta(cfg, data, run_name, time.monotonic() - start) | _autoattack_meta(cfg),
            metric_columns=metric_names(cfg.evaluation) + autoattack_metric_names(cfg.evaluation), flags=flags,
            reference=cfg.report.reference.record() if cfg.report.reference else None,
        )
        hv = hypervolume_of(records, cfg.objectives, teacher_metrics)
        _tag_front(tracker, paths)
        tracker.log_metrics(None, {"pareto/hypervolume": hv})
        tracker.log_artifacts(None, [out_dir], artifact_path="report")
        status = "FINISHED"
    finally:
        tracker.end_sweep(status)
        if tracker.failures:
            echo(f"MLflow: {len(tracker.failures)} write(s) failed, first: {tracker.failures[0]}; "
                 "the report and Ray's records are complete")
    return StudyOutcome(records, paths, hv, teacher_metrics, run_name)


def _after_sweep(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, records: list[TrialRecord], teacher_metrics: dict[str, float],
    echo: Callable[[str], None],
) -> tuple[list[TrialRecord], dict[str, float], dict[str, list[str]]]:
    """Measurements made serially once the sweep is over: latency, AutoAttack, gradient-masking checks."""
    students = {r.trial_id: _load_student(cfg, data, r) for r in records if r.status == "COMPLETE" and r.checkpoint}
    records, teacher_metrics = _serial_latency(cfg, data, teacher, students, records, teacher_metrics)
    records, teacher_metrics = _autoattack(cfg, data, teacher, students, records, teacher_metrics, echo)
    return records, teacher_metrics, _masking_flags(cfg, records, teacher_metrics, echo)


def _log_after_sweep(
    tracker: Tracker, cfg: StudyConfig, records: list[TrialRecord], teacher_metrics: dict[str, float]
) -> None:
    """The post-sweep metrics (serial latency, AutoAttack) and each student's weights, into MLflow."""
    robust_names = autoattack_metric_names(cfg.evaluation)  # [] unless AutoAttack is enabled
    tracker.log_metrics(None, {f"teacher/{k}": teacher_metrics[k] for k in robust_names if k in teacher_metrics})
    for r in records:
        if r.status == "COMPLETE":
            post_sweep = {k: v for k, v in r.metrics.items() if k.startswith("latency/") or k in robust_names}
            tracker.log_metrics(r.trial_id, post_sweep, step=cfg.student.epochs + 1)
            tracker.log_artifacts(r.trial_id, [Path(r.checkpoint) / STUDENT_FILE] if r.checkpoint else [])


def _with_metrics(records: list[TrialRecord], extra: dict[str, dict[str, float]]) -> list[TrialRecord]:
    """Records with ``extra[trial_id]`` merged into their metrics."""
    return [dataclasses.replace(r, metrics={**r.metrics, **extra[r.trial_id]}) if r.trial_id in extra else r
            for r in records]


def _serial_latency(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, students: dict[str, nn.Module],
    records: list[TrialRecord], teacher_metrics: dict[str, float],
) -> tuple[list[TrialRecord], dict[str, float]]:
    """Re-measure the latency of the teacher and every finished student side by side, one at a time."""
    latency = measure_latency({"__teacher__": teacher.model.cpu(), **students}, data.input_shape, cfg.evaluation.latency)
    return _with_metrics(records, latency), {**teacher_metrics, **latency["__teacher__"]}


def _load_student(cfg: StudyConfig, data: Dataset, record: TrialRecord) -> nn.Module:
    """A finished trial's student, rebuilt from its config and loaded from its checkpoint (on the CPU)."""
    spec = cfg.with_overrides(record.params).student.model
    student = build_model(spec.name, spec.params, data.info)
    state = torch.load(Path(str(record.checkpoint)) / STUDENT_FILE, map_location="cpu", weights_only=True)
    student.load_state_dict(state)
    return student


def _autoattack(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, students: dict[str, nn.Module],
    records: list[TrialRecord], teacher_metrics: dict[str, float], echo: Callable[[str], None],
) -> tuple[list[TrialRecord], dict[str, float]]:
    """Add ``test/autoattack_acc@<eps>`` to the teacher and the front members (or all complete trials)."""
    spec = cfg.evaluation.autoattack
    if not spec.enabled or not spec.eps:
        return records, teacher_metrics
    on_front = front_mask(records, cfg.objectives) if spec.members == "front" else [True] * len(records)
    chosen = [r.trial_id for r, f in zip(records, on_front) if f and r.trial_id in students]
    x, y = data.test.x[: spec.n_samples].cpu(), data.test.y[: spec.n_samples].cpu()
    echo(f"AutoAttack at eps {', '.join(map(str, spec.eps))} on the first {len(y)} test images: "
         f"the teacher and {len(chosen)} trial(s)")

    def attacked(model: nn.Module) -> dict[str, float]:
        # Clean and PGD accuracy on the same images, so AutoAttack is compared like with like.
        out = {f"{AA_SUBSET}/acc": accuracy(model, x, y)}
        for e in spec.eps:
            pgd_e = functools.partial(pgd, eps=e, steps=cfg.evaluation.pgd_steps)
            out[f"{AA_SUBSET}/robust_acc@{eps_name(e)}"] = robust_accuracy(model, x, y, pgd_e)
            aa = autoattack_accuracy(model, x, y, eps=e, n_classes=data.n_classes, seed=cfg.seed)
            out[autoattack_metric(e)] = out[f"{AA_SUBSET}/autoattack_acc@{eps_name(e)}"] = aa
        return out

    robust = {trial_id: attacked(students[trial_id]) for trial_id in chosen}
    return _with_metrics(records, robust), {**teacher_metrics, **attacked(teacher.model.cpu())}


def _masking_flags(
    cfg: StudyConfig, records: list[TrialRecord], teacher_metrics: dict[str, float], echo: Callable[[str], None]
) -> dict[str, list[str]]:
    """Gradient-masking checks (``robustness.masking_checks``) on the teacher and every complete trial.

    PGD and FGSM are checked on the whole test split; AutoAttack, which sees only its first
    ``n_samples`` images, against clean and PGD accuracy on those same images.
    """

    def checks(metrics: dict[str, float]) -> list[str]:
        full = {k: v for k, v in metrics.items() if "autoattack" not in k and not k.startswith(AA_SUBSET)}
        subset = {"test/" + k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{AA_SUBSET}/")}
        found = masking_checks(full, cfg.evaluation.eps)
        return found + [f"{v} (AutoAttack images)" for v in masking_checks(subset, cfg.evaluation.autoattack.eps)]

    flags = {"teacher": checks(teacher_metrics)}
    flags.update({r.trial_id: checks(r.metrics) for r in records if r.status == "COMPLETE"})
    flagged = sorted(name for name, found in flags.items() if found)
    shown = f" ({', '.join(flagged)})" if flagged else ""
    echo(f"robustness sanity checks: {len(flagged)} of {len(flags)} models flagged{shown}")
    return flags


def _autoattack_meta(cfg: StudyConfig) -> dict[str, str]:
    spec = cfg.evaluation.autoattack
    if not spec.enabled:
        return {}
    who = "the Pareto-front members" if spec.members == "front" else "every complete trial"
    return {"AutoAttack protocol": f"ART, L-inf, eps {', '.join(map(str, spec.eps))}, on the first {spec.n_samples} "
            f"test images, for the teacher and {who}: {AUTOATTACK_BUDGET}; seed {cfg.seed}"}


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
