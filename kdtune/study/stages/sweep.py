"""Stage: the sweep through Ray Tune, with the teacher's evaluation alongside; then the stored trials."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from kdtune import priority, store
from kdtune.records import TrialRecord
from kdtune.study._run import StudyRun, SweepPace
from kdtune.study._stored import load_students, read_records, teacher_metrics
from kdtune.tracking import Outcome, Tracker


def sweep(run: StudyRun) -> None:
    """Run the planned sweep (nothing if it has no trials) while the driver evaluates the teacher and warms
    up the report; then read every stored trial and load the complete ones' students."""
    with priority.alongside(lambda: _while_sweeping(run)) as pending:
        ray_errors = _run_sweep(run)
    tracker = run.tracker
    if run.pace is not None:
        tracker.log_metrics(None, {"sweep/trials": run.pace.trials, "sweep/seconds": run.pace.seconds,
                                   "sweep/trials_per_hour": run.pace.per_hour})
    run.teacher_metrics = pending.result()
    store.save_teacher_metrics(run.optuna_study, run.teacher_metrics)
    tracker.log_metrics(None, {f"teacher/{k}": v for k, v in run.teacher_metrics.items()})
    run.records = [_with_ray_error(r, ray_errors) for r in read_records(run)]
    if run.plan.resume:  # trials finished just before the driver was killed may have lost their MLflow writes
        from kdtune.sweep import STUDENT_FILE

        tracker.settle_trials(_outcomes(run), step=run.cfg.student.epochs, weights_as=STUDENT_FILE)
    load_students(run)
    tracker.wait()  # the serial latency is measured with nothing else running in this process


def _while_sweeping(run: StudyRun) -> dict[str, float]:
    """The driver's work while the trials run: the teacher's metrics, then MLflow's model logging is warmed
    up (its first export costs seconds) and the report's process is waited for, so that the work after the
    sweep waits for neither."""
    metrics = teacher_metrics(run)
    Tracker.preload()
    run.drawer.wait_ready()
    return metrics


def _run_sweep(run: StudyRun) -> dict[str, str]:
    """The planned sweep through Ray; its log entry says if it finished. Returns Ray's errors by trial folder
    and sets ``run.pace`` (left None if nothing ran)."""
    plan, cfg = run.plan, run.cfg
    if plan.n_trials == 0:
        run.echo("the grid is complete: nothing to run, rebuilding the report")
        return {}
    from kdtune import sweep  # ray is imported only when a sweep runs

    store.set_sweep(run.optuna_study, plan.name, "running")
    store.enqueue(run.optuna_study, cfg.search.enqueue)
    progress = sweep.ProgressCallback(cfg, run.echo, total=plan.n_trials)  # counts the trials that end
    res = cfg.resources
    per_trial = f"{res.cpu:g} CPU" + (f" + {res.gpu:g} GPU" if res.gpu else "")
    cluster = sweep.cluster_summary()
    job = sweep.SweepJob(
        cfg=cfg, data=run.data, teacher=run.teacher.model, teacher_logits=run.teacher_logits, storage=run.paths.ray,
        run_name=plan.name, n_trials=plan.n_trials, optuna_storage=run.paths.storage,
        students_dir=run.paths.students, resume=plan.resume, feasibility=run.feasibility,
    )
    start = time.monotonic()
    errors = sweep.run_sweep(job, [sweep.TrackingCallback(run.tracker, cfg, run.paths.students), progress])
    seconds = time.monotonic() - start
    store.set_sweep(run.optuna_study, plan.name, "finished")
    store.fail_orphans(run.optuna_study)  # the sweep has ended: no trial of the study is running
    run.pace = SweepPace(progress.done, seconds, per_trial, cfg.search.max_concurrent, cluster)
    return errors


def _outcomes(run: StudyRun) -> dict[str, Outcome]:
    """The finished trials, for ``Tracker.settle_trials``; those of the resumed sweep (their folders are in
    its Tune experiment) with their run's params, so that a run the killed driver never made is made."""
    from kdtune.sweep import trial_run_fields

    folder = run.paths.ray / run.plan.name
    here = [d.name for d in folder.iterdir()] if folder.is_dir() else []
    outcomes = {}
    for r in run.records:
        fields = trial_run_fields(run.cfg, r.params) if any(f"_{r.trial_id}_" in d for d in here) else (None, None)
        failed = r.status == "FAILED"
        outcomes[r.trial_id] = Outcome(r.metrics, (r.error or "the trial failed") if failed else None,
                                       Path(r.checkpoint) if r.checkpoint else None, *fields,
                                       pruned_at_epoch=r.epochs if r.status == "PRUNED" else None)
    return outcomes


def _with_ray_error(record: TrialRecord, ray_errors: dict[str, str]) -> TrialRecord:
    """A Ray-level failure's own reason (error.txt) in place of the generic one, where this run saw it."""
    reason = next((why for folder, why in ray_errors.items() if f"_{record.trial_id}_" in folder), None)
    return dataclasses.replace(record, error=reason) if reason and record.status == "FAILED" else record
