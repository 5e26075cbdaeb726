"""A whole study, in order: data -> teacher (once) -> sweep -> serial latency -> AutoAttack and
gradient-masking checks -> report -> MLflow.

Nothing here imports ray or mlflow directly: those live in ``study`` and ``tracking``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdtune import priority, store
from kdtune.attacks import pgd
from kdtune.config import StudyConfig
from kdtune.data import Dataset, load_dataset
from kdtune.errors import KdtuneError, SweepInterrupted
from kdtune.evaluate import correct, eps_name, evaluate_model, measure_latency, metric_names, robust_accuracy, share
from kdtune.models import build_model
from kdtune.records import TrialRecord
from kdtune.report import hypervolume_of, write_report
from kdtune.report._process import ReportProcess
from kdtune.report._tables import front_mask
from kdtune.robustness import (
    AUTOATTACK_BUDGET,
    autoattack_accuracy,
    autoattack_metric,
    autoattack_metric_names,
    masking_checks,
)
from kdtune.teacher import Teacher, cache_dir, frozen, load_or_train_teacher
from kdtune.tracking import Outcome, Tracker, default_uri
from kdtune.train import logits_of

log = logging.getLogger(__name__)
AA_SUBSET = "test_autoattack_images"  # metrics measured on the images AutoAttack attacks
SEEDS_DONE = "seeds/n"  # how many seeds a front member was evaluated over (evaluation.seeds)


@dataclass(frozen=True)
class SweepPace:
    """How fast a run's sweep went: the trials that ended in it (complete or failed) over its wall time,
    with the resources behind that figure."""

    trials: int
    seconds: float
    per_trial: str  # what each trial asked Ray for: "1 CPU", "1 CPU + 0.25 GPU"
    at_once: int  # search.max_concurrent
    cluster: str  # what Ray had when the sweep started: "1 node(s), 2 CPU(s), 0 GPU(s)"

    @property
    def per_hour(self) -> float:
        return self.trials * 3600.0 / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        trials = f"{self.trials} trial{'' if self.trials == 1 else 's'}"
        return (f"{trials} ended in {self.seconds:.1f} s of sweep: {self.per_hour:,.0f} trials/hour "
                f"({self.per_trial} per trial, up to {self.at_once} at once; Ray: {self.cluster})")


@dataclass(frozen=True)
class StudyOutcome:
    records: list[TrialRecord]
    report: dict[str, Path]
    hypervolume: float
    teacher_metrics: dict[str, float]
    run_name: str
    pace: SweepPace | None = None  # None where no sweep ran (a rebuilt report, a complete grid)


def run_study(
    cfg: StudyConfig,
    *,
    workdir: Path | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    study_path: str | None = None,
) -> StudyOutcome:
    """Run ``cfg`` end to end; every path is resolved against ``workdir`` (default: cwd). ``study_path``
    (the file as the user named it) goes into the report's ``kdtune rerun`` commands.

    The study accumulates: a new run adds ``search.budget`` trials to those stored (a grid adds what is
    left of it), and a run whose sweep was interrupted resumes that sweep instead.
    """
    from kdtune import study  # ray is imported only when a sweep actually runs

    workdir = (workdir or Path.cwd()).resolve()
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kdtune-mlflow") as opener:
        # Opening the MLflow store overlaps Ray's start-up and the teacher's loading, and a new SQLite store's
        # schema (about a second of migrations) is built on the tracker's writer while the sweep starts; a
        # store that cannot be opened or written still fails before any trial.
        opening = opener.submit(
            Tracker, default_uri(cfg.tracking.uri, workdir), cfg.tracking.experiment or cfg.name,
            artifact_root=workdir / "mlartifacts", defer_schema=True,
        )
        study.init_ray(address, configured=cfg.ray.address, echo=echo)  # a bad address fails before any work
        data, teacher = _prepare(cfg, echo)
        optuna_study = _open_study(cfg, _storage(cfg, workdir))
        plan = _plan_sweep(cfg, optuna_study, workdir, echo)
        tracker = opening.result()
    tracker.write_in_background()  # MLflow writes leave the sweep's and the report's path
    tracker.start_sweep(plan.name, _flatten_top(cfg), {"study": cfg.name, "kind": "sweep"})
    status = "FAILED"
    drawer = ReportProcess()  # it loads its libraries while the trials run, at the lowest priority
    try:
        # The driver waits while trials run: it evaluates the teacher and prepares the report then.
        with _alongside(lambda: _while_sweeping(cfg, data, teacher, drawer, echo)) as pending:
            ray_errors, pace = _sweep(cfg, data, teacher, optuna_study, plan, tracker, workdir, echo)
        if pace is not None:
            tracker.log_metrics(None, {"sweep/trials": pace.trials, "sweep/seconds": pace.seconds,
                                       "sweep/trials_per_hour": pace.per_hour})
        teacher_metrics = pending.result()
        store.save_teacher_metrics(optuna_study, teacher_metrics)
        tracker.log_metrics(None, {f"teacher/{k}": v for k, v in teacher_metrics.items()})
        records = [_with_ray_error(r, ray_errors) for r in store.read_records(optuna_study, _students_dir(cfg, workdir))]
        if plan.resume:  # trials finished just before the driver was killed may have lost their last MLflow writes
            tracker.settle_trials(_outcomes(records), step=cfg.student.epochs, weights_as=study.STUDENT_FILE)
        students = _load_students(cfg, data, records)
        tracker.wait()  # the serial latency is measured with nothing else running in this process
        records, teacher_metrics, flags = _after_sweep(cfg, data, teacher, records, students, teacher_metrics, echo)
        store.save_post_metrics(optuna_study, {r.trial_id: _post_metrics(cfg, r.metrics) for r in records})
        _log_after_sweep(tracker, cfg, data, records, students, teacher_metrics)
        paths, hv = _report(cfg, workdir, data, records, teacher_metrics, flags, time.monotonic() - start, plan.name,
                            study_path, drawer=drawer, pace=pace)
        _tag_front(tracker, paths)
        tracker.log_metrics(None, {"pareto/hypervolume": hv})
        tracker.log_artifacts(None, [paths["report_md"].parent], artifact_path="report")
        status = "FINISHED"
    except (SweepInterrupted, KeyboardInterrupt):
        status = "KILLED"  # the sweep stays "running" in the study's log: the next run resumes it
        raise
    finally:
        drawer.close()  # unused if the study stopped before its report
        tracker.end_sweep(status)
        tracker.flush()
        if tracker.failures:
            echo(f"MLflow: {len(tracker.failures)} write(s) failed, first: {tracker.failures[0]}; "
                 "the report and the study's storage are complete")
    return StudyOutcome(records, paths, hv, teacher_metrics, plan.name, pace)


def rebuild_report(
    cfg: StudyConfig, *, workdir: Path | None = None, echo: Callable[[str], None] = print, study_path: str | None = None
) -> StudyOutcome:
    """The report of every trial stored for ``cfg``, rebuilt without training anything (the teacher
    must be in the cache; latency is re-measured, AutoAttack runs only where it is missing)."""
    workdir = (workdir or Path.cwd()).resolve()
    start = time.monotonic()
    url = _storage(cfg, workdir)
    optuna_study = _open_study(cfg, url, create=False)
    records = store.read_records(optuna_study, _students_dir(cfg, workdir))
    if not records:
        raise KdtuneError(f"no trials are stored for study '{cfg.name}' in {store.redact(url)}; run the study first")
    data, teacher = _prepare(cfg, echo, train_teacher=False)
    teacher_metrics = _teacher_metrics(cfg, data, teacher, echo)
    students = _load_students(cfg, data, records)
    records, teacher_metrics, flags = _after_sweep(cfg, data, teacher, records, students, teacher_metrics, echo)
    store.save_post_metrics(optuna_study, {r.trial_id: _post_metrics(cfg, r.metrics) for r in records})
    name = (store.sweeps(optuna_study) or [{"name": "-"}])[-1]["name"]
    paths, hv = _report(cfg, workdir, data, records, teacher_metrics, flags, time.monotonic() - start, name, study_path)
    return StudyOutcome(records, paths, hv, teacher_metrics, name)


def rerun_trial(
    cfg: StudyConfig, trial_id: str, *, workdir: Path | None = None, echo: Callable[[str], None] = print
) -> tuple[dict[str, float], dict[str, float]]:
    """Retrain one stored trial from its recorded hyperparameters (no Ray) and evaluate it again.

    Returns (stored metrics, metrics of the rerun). Training is seeded and uses the trial's thread
    count, so accuracies reproduce; latency is re-measured and varies within noise.
    """

    workdir = (workdir or Path.cwd()).resolve()
    url = _storage(cfg, workdir)
    optuna_study = _open_study(cfg, url, create=False)
    records = {r.trial_id: r for r in store.read_records(optuna_study, _students_dir(cfg, workdir))}
    if trial_id not in records:
        known = ", ".join(list(records)[:8]) + (" ..." if len(records) > 8 else "")
        raise KdtuneError(f"no trial '{trial_id}' is stored for study '{cfg.name}'; stored: {known or 'none'}")
    record = records[trial_id]
    data, teacher = _prepare(cfg, echo, train_teacher=False)
    echo(f"retraining trial {trial_id} ({', '.join(f'{k}={v}' for k, v in record.params.items())})")
    return record.metrics, _retrain(cfg, data, teacher, logits_of(teacher.model, data.train.x), record, seed=None)


def _retrain(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, teacher_logits: torch.Tensor, record: TrialRecord, *,
    seed: int | None,
) -> dict[str, float]:
    """One stored trial trained again without Ray (its own seed unless ``seed`` is given) and evaluated;
    ``teacher_logits`` are the teacher's on the training split (computed once by the caller)."""
    from kdtune.methods import MethodContext
    from kdtune.pipeline import run_student

    overrides = record.params if seed is None else {**record.params, "seed": seed}
    trial_cfg = cfg.with_overrides(overrides)
    torch.set_num_threads(max(1, int(trial_cfg.resources.cpu)))  # as the trial ran: same arithmetic order
    ctx = MethodContext(
        data=data, teacher=frozen(teacher.model, "cpu"), teacher_logits=teacher_logits,
        student_spec=trial_cfg.student, seed=trial_cfg.seed, cache=cache_dir(trial_cfg.output.cache),
    )
    run = run_student(trial_cfg, ctx)
    latency = measure_latency({"student": run.student}, data.input_shape, cfg.evaluation.latency)["student"]
    return {**run.metrics, **latency}


def _seed_repeats(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, records: list[TrialRecord], echo: Callable[[str], None]
) -> list[TrialRecord]:
    """With ``evaluation.seeds`` = k > 1, each front member retrained with seeds seed+1..seed+k-1 (serially);
    adds ``<metric>/mean`` and ``<metric>/ci95`` (half-width of the 95% t-interval over the k runs)."""
    k = cfg.evaluation.seeds
    on_front = front_mask(records, cfg.objectives)
    todo = [r for r, f in zip(records, on_front) if f and r.status == "COMPLETE" and SEEDS_DONE not in r.metrics]
    if k <= 1 or not todo:
        return records
    echo(f"repeating {len(todo)} front member(s) over {k} seeds")
    logits, extra = logits_of(teacher.model, data.train.x), {}
    for r in todo:
        runs = [r.metrics] + [_retrain(cfg, data, teacher, logits, r, seed=cfg.seed + i) for i in range(1, k)]
        extra[r.trial_id] = {SEEDS_DONE: float(k), **seed_summary(runs)}
    return _with_metrics(records, extra)


def seed_summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """``<metric>/mean`` and ``<metric>/ci95`` over runs for every metric they all have."""
    from scipy import stats

    out = {}
    for name in set.intersection(*(set(r) for r in runs)):
        values = [r[name] for r in runs]
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        out[f"{name}/mean"] = mean
        out[f"{name}/ci95"] = float(stats.t.ppf(0.975, len(values) - 1)) * sd / math.sqrt(len(values))
    return out


def _prepare(cfg: StudyConfig, echo: Callable[[str], None], *, train_teacher: bool = True) -> tuple[Dataset, Teacher]:
    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    echo(f"dataset {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    teacher = load_or_train_teacher(
        cfg.teacher, data, seed=cfg.seed, root=cache_dir(cfg.output.cache), train=train_teacher
    )
    echo(f"teacher {'loaded from cache' if teacher.from_cache else 'trained and cached'}: {teacher.path}")
    return data, teacher


def _teacher_metrics(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, echo: Callable[[str], None]
) -> dict[str, float]:
    """The teacher's metrics (the students' evaluation)."""
    metrics = evaluate_model(frozen(teacher.model, "cpu"), data, cfg.evaluation, seed=cfg.seed)
    echo(f"teacher val/acc={metrics['val/acc']:.4f} test/acc={metrics['test/acc']:.4f}")
    return metrics


def _while_sweeping(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, drawer: ReportProcess, echo: Callable[[str], None]
) -> dict[str, float]:
    """The driver's work while the trials run: the teacher's metrics, then MLflow's model logging is warmed
    up (its first export costs seconds) and ``drawer`` (the report's process) is waited for, so that the
    work after the sweep waits for neither."""
    metrics = _teacher_metrics(cfg, data, teacher, echo)
    Tracker.preload()
    drawer.wait_ready()
    return metrics


@contextlib.contextmanager
def _alongside(work: Callable[[], Any]) -> Iterator[concurrent.futures.Future]:
    """Run ``work`` in a driver thread, with one torch thread and the lowest CPU priority, while the block
    runs (the sweep, whose trials have the other cores and come first); the future holds its result.
    Leaving the block waits for it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="kdtune-driver", initializer=priority.background_thread
        ) as pool:
            yield pool.submit(work)
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class SweepPlan:
    name: str  # sweep-001, sweep-002, ...
    n_trials: int  # trials this sweep adds (0: nothing left to run, only the report)
    resume: bool  # continue an interrupted sweep of that name


def _plan_sweep(cfg: StudyConfig, optuna_study: Any, workdir: Path, echo: Callable[[str], None]) -> SweepPlan:
    """Resume the last sweep if it was interrupted, else start the next one with the budget."""
    log_ = store.sweeps(optuna_study)
    if log_ and log_[-1]["status"] == "running":
        name = log_[-1]["name"]
        from kdtune import study  # ray is imported only when a sweep actually runs

        if study.can_resume(_ray_dir(cfg, workdir), name):
            echo(f"resuming the interrupted {name}: finished trials are kept, unfinished ones continue")
            return SweepPlan(name, cfg.search.n_trials, resume=True)
        echo(f"{name} was interrupted before Tune saved it; starting a new sweep")
    name = f"sweep-{len(log_) + 1:03d}"
    done = len(store.read_records(optuna_study, _students_dir(cfg, workdir)))
    n_trials = cfg.search.n_trials
    if cfg.search.sampler.name == "grid":  # the grid is shared by every sweep: run what is left of it
        n_trials = max(0, cfg.search.n_trials - done)
    echo(f"{name}: {n_trials} new trial(s) on top of {done} stored" if done else f"{name}: {n_trials} trial(s)")
    return SweepPlan(name, n_trials, resume=False)


def _sweep(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, optuna_study: Any, plan: SweepPlan, tracker: Tracker,
    workdir: Path, echo: Callable[[str], None],
) -> tuple[dict[str, str], SweepPace | None]:
    """Run the planned sweep through Ray (nothing if it has no trials); its log entry says if it finished.
    Returns Ray's errors by trial folder and the sweep's pace (None if nothing ran)."""
    if plan.n_trials == 0:
        echo("the grid is complete: nothing to run, rebuilding the report")
        return {}, None
    from kdtune import study  # ray is imported only when a sweep actually runs

    store.set_sweep(optuna_study, plan.name, "running")
    progress = study.ProgressCallback(cfg, echo)  # counts the trials that end
    res = cfg.resources
    per_trial = f"{res.cpu:g} CPU" + (f" + {res.gpu:g} GPU" if res.gpu else "")
    cluster = study.cluster_summary()
    start = time.monotonic()
    errors = study.run_sweep(
        cfg, data, teacher.model, logits_of(teacher.model, data.train.x),
        storage=_ray_dir(cfg, workdir), run_name=plan.name, n_trials=plan.n_trials,
        optuna_storage=_storage(cfg, workdir), students_dir=_students_dir(cfg, workdir),
        callbacks=[study.TrackingCallback(tracker, cfg, _students_dir(cfg, workdir)), progress],
        resume=plan.resume,
    )
    seconds = time.monotonic() - start
    store.set_sweep(optuna_study, plan.name, "finished")
    return errors, SweepPace(progress.done, seconds, per_trial, cfg.search.max_concurrent, cluster)


def _outcomes(records: list[TrialRecord]) -> dict[str, Outcome]:
    """The finished trials, for ``Tracker.settle_trials``."""
    return {r.trial_id: Outcome(r.metrics, None if r.status == "COMPLETE" else r.error or "the trial failed",
                                Path(r.checkpoint) if r.checkpoint else None) for r in records}


def _with_ray_error(record: TrialRecord, ray_errors: dict[str, str]) -> TrialRecord:
    """A Ray-level failure's own reason (error.txt) in place of the generic one, where this run saw it."""
    reason = next((why for folder, why in ray_errors.items() if f"_{record.trial_id}_" in folder), None)
    return dataclasses.replace(record, error=reason) if reason and record.status == "FAILED" else record


def _post_metrics(cfg: StudyConfig, metrics: dict[str, float]) -> dict[str, float]:
    """The metrics measured after the sweep, which the study's storage keeps per trial."""
    post = set(autoattack_metric_names(cfg.evaluation)) | {SEEDS_DONE}
    repeated = ("/mean", "/ci95")
    return {k: v for k, v in metrics.items() if k.startswith(("latency/", AA_SUBSET)) or k in post or k.endswith(repeated)}


def _report(
    cfg: StudyConfig, workdir: Path, data: Dataset, records: list[TrialRecord], teacher_metrics: dict[str, float],
    flags: dict[str, list[str]], seconds: float, run_name: str, study_path: str | None = None,
    drawer: ReportProcess | None = None, pace: SweepPace | None = None,
) -> tuple[dict[str, Path], float]:
    """Write the report (in ``drawer``'s process when given) and compute its hypervolume."""
    try:
        paths = _write(cfg, workdir, data, records, teacher_metrics, flags, seconds, run_name, study_path, drawer,
                       pace)
    except KdtuneError as err:
        raise KdtuneError(f"{err}; every trial is stored, so `kdtune report` rebuilds the report once fixed") from None
    return paths, hypervolume_of(records, cfg.objectives, teacher_metrics)


def _write(
    cfg: StudyConfig, workdir: Path, data: Dataset, records: list[TrialRecord], teacher_metrics: dict[str, float],
    flags: dict[str, list[str]], seconds: float, run_name: str, study_path: str | None,
    drawer: ReportProcess | None, pace: SweepPace | None,
) -> dict[str, Path]:
    return (drawer.write if drawer is not None else write_report)(
        workdir / cfg.output.reports / cfg.name, study_name=cfg.name, records=records, objectives=cfg.objectives,
        search_params=list(cfg.search.space), teacher_metrics=teacher_metrics,
        meta=_meta(cfg, data, run_name, seconds) | _pace_meta(pace) | _autoattack_meta(cfg),
        metric_columns=metric_names(cfg.evaluation) + autoattack_metric_names(cfg.evaluation), flags=flags,
        reference=cfg.report.reference.record() if cfg.report.reference else None, study_path=study_path,
    )


def _storage(cfg: StudyConfig, workdir: Path) -> str:
    return store.storage_url(cfg.output.optuna, workdir)


def _open_study(cfg: StudyConfig, url: str, *, create: bool = True) -> Any:
    """The study's record in its Optuna storage at ``url`` (``store.open_study``)."""
    return store.open_study(url, cfg.name, [o.mode + "imize" for o in cfg.objectives], create=create)


def _ray_dir(cfg: StudyConfig, workdir: Path) -> Path:
    return (workdir / cfg.output.ray / cfg.name).resolve()


def _students_dir(cfg: StudyConfig, workdir: Path) -> Path:
    """Where each finished trial's student weights are kept (``<trial id>.pt``), across sweeps."""
    return _ray_dir(cfg, workdir) / "students"


def _after_sweep(
    cfg: StudyConfig, data: Dataset, teacher: Teacher, records: list[TrialRecord], students: dict[str, nn.Module],
    teacher_metrics: dict[str, float], echo: Callable[[str], None],
) -> tuple[list[TrialRecord], dict[str, float], dict[str, list[str]]]:
    """Measurements made serially once the sweep is over: latency, AutoAttack, gradient-masking checks."""
    records, teacher_metrics = _serial_latency(cfg, data, teacher, students, records, teacher_metrics)
    records, teacher_metrics = _autoattack(cfg, data, teacher, students, records, teacher_metrics, echo)
    records = _seed_repeats(cfg, data, teacher, records, echo)
    return records, teacher_metrics, _masking_flags(cfg, records, teacher_metrics, echo)


def _log_after_sweep(
    tracker: Tracker, cfg: StudyConfig, data: Dataset, records: list[TrialRecord], students: dict[str, nn.Module],
    teacher_metrics: dict[str, float],
) -> None:
    """The post-sweep metrics (serial latency, AutoAttack) into MLflow; the Pareto-front members of this
    sweep also as loadable PyTorch models with an input signature (each trial's weights were logged when
    it finished, ``study.TrackingCallback``)."""
    robust_names = autoattack_metric_names(cfg.evaluation)  # [] unless AutoAttack is enabled
    tracker.log_metrics(None, {f"teacher/{k}": teacher_metrics[k] for k in robust_names if k in teacher_metrics})
    for r in records:
        if r.status == "COMPLETE":
            post_sweep = {k: v for k, v in r.metrics.items() if k.startswith("latency/") or k in robust_names}
            tracker.log_metrics(r.trial_id, post_sweep, step=cfg.student.epochs + 1)
    example = data.val.x[:2].cpu().numpy()  # (2, C, H, W) float32 pixels in [0, 1]
    for r, on_front in zip(records, front_mask(records, cfg.objectives)):
        if on_front and r.trial_id in students:  # a trial without an MLflow run is skipped by log_model
            tracker.log_model(r.trial_id, students[r.trial_id].eval(), example)


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


def _load_students(cfg: StudyConfig, data: Dataset, records: list[TrialRecord]) -> dict[str, nn.Module]:
    """``{trial id: student}`` for every complete trial whose weights are stored (loaded once, on the CPU)."""
    return {r.trial_id: _load_student(cfg, data, r) for r in records if r.status == "COMPLETE" and r.checkpoint}


def _load_student(cfg: StudyConfig, data: Dataset, record: TrialRecord) -> nn.Module:
    """A finished trial's student, rebuilt from its config and loaded from its stored weights (on the CPU)."""
    spec = cfg.with_overrides(record.params).student.model
    student = build_model(spec.name, spec.params, data.info)
    state = torch.load(str(record.checkpoint), map_location="cpu", weights_only=True)
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
    done = autoattack_metric(spec.eps[-1])  # stored by an earlier run of the study: not attacked again
    chosen = [r.trial_id for r, f in zip(records, on_front) if f and r.trial_id in students and done not in r.metrics]
    x, y = data.test.x[: spec.n_samples].cpu(), data.test.y[: spec.n_samples].cpu()
    echo(f"AutoAttack at eps {', '.join(map(str, spec.eps))} on the first {len(y)} test images: "
         f"the teacher and {len(chosen)} trial(s)")

    def attacked(model: nn.Module) -> dict[str, float]:
        # Clean and PGD accuracy on the same images, so AutoAttack is compared like with like.
        right = correct(model, x, y)
        out = {f"{AA_SUBSET}/acc": share(right)}
        for e in spec.eps:
            pgd_e = functools.partial(pgd, eps=e, steps=cfg.evaluation.pgd_steps)
            out[f"{AA_SUBSET}/robust_acc@{eps_name(e)}"] = robust_accuracy(model, x, y, pgd_e, right=right)
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


def _pace_meta(pace: SweepPace | None) -> dict[str, str]:
    return {"sweep pace": pace.text()} if pace is not None else {}


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
    """The sweep's parent-run params: each top-level section, with passwords in URLs redacted."""
    raw = cfg.to_raw()
    raw["tracking"]["uri"] = store.redact(raw["tracking"]["uri"]) if raw["tracking"]["uri"] else None
    raw["output"]["optuna"] = store.redact(raw["output"]["optuna"]) if raw["output"]["optuna"] else None
    return {k: str(v) for k, v in raw.items()}


def _sampler_text(cfg: StudyConfig) -> str:
    kind = cfg.search.sampler_kind
    return f"auto ({kind})" if cfg.search.sampler.name == "auto" else kind


def _meta(cfg: StudyConfig, data: Dataset, run_name: str, seconds: float) -> dict[str, str]:
    lat = cfg.evaluation.latency
    return {
        "study": cfg.name,
        "description": cfg.description,
        "run": run_name,
        "dataset": f"{data.name} ({len(data.train)} train / {len(data.val)} val / {len(data.test)} test)",
        "objectives": ", ".join(f"{o.metric} ({o.mode})" for o in cfg.search.objectives) + " on the validation split",
        "sampler": f"{_sampler_text(cfg)}, {cfg.search.n_trials} trials per sweep, seed {cfg.seed}",
        "machine": f"{platform.machine()} {platform.processor() or ''} ({torch.get_num_threads()} torch threads available), "
        f"Python {sys.version.split()[0]}, torch {torch.__version__}",
        "latency protocol": f"measured serially after the sweep on the CPU: 1 thread, inference mode, {lat.warmup} warm-up "
        f"calls per model and batch size, {lat.repeats} interleaved repeats of {lat.n_calls} timed calls, "
        + ("the fastest call" if lat.statistic == "min" else "the median per-call time"),
        "wall time": f"{seconds:.0f} s",
    }
