"""A study run as a list of stages over one ``StudyRun``: ``run_study``, ``rebuild_report``, ``rerun_trial``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kdtune.errors import KdtuneError, SweepInterrupted
from kdtune.spec import StudyConfig
from kdtune.study._retrain import retrain
from kdtune.study._run import StudyOutcome, StudyPaths, StudyRun
from kdtune.study._stored import load_data_and_teacher, open_study, read_records, record_teacher
from kdtune.study.stages import (
    ablation,
    autoattack,
    check,
    load,
    lock,
    log_models,
    masking,
    onnx_files,
    post_metrics,
    publish,
    report,
    seed_repeats,
    serial_latency,
    start,
    sweep,
)

Stage = Callable[[StudyRun], None]

# What is measured serially once the trials are over, in a study run and in a rebuilt report alike: a new
# post-sweep measurement is one module in kdtune/study/stages and one line here.
MEASUREMENTS: tuple[Stage, ...] = (
    serial_latency.measure,
    autoattack.attack,
    seed_repeats.repeat,
    ablation.ablate,
    masking.check,
)
# A study file run end to end: the new sweep (or the resumed one), then the measurements and the report.
RUN_STAGES: tuple[Stage, ...] = (
    check.check,  # the user's code (references, weights, MLflow models, augmented data): writes nothing
    lock.acquire,  # one driver per study
    start.start,  # MLflow, Ray, data, teacher, the study's storage, the sweep's plan
    sweep.sweep,  # the trials, the teacher's metrics alongside; every stored trial and its student
    *MEASUREMENTS,
    post_metrics.save,  # into the study's storage
    onnx_files.write,  # the front's and the teacher's ONNX files, beside the report
    log_models.log,  # into MLflow
    report.write,
    publish.publish,  # the report and the front into MLflow
)
# ``kdtune report``: the same measurements over what is stored, training nothing.
REPORT_STAGES: tuple[Stage, ...] = (load.load, *MEASUREMENTS, post_metrics.save, onnx_files.write, report.write)


def run_study(
    cfg: StudyConfig, *, workdir: Path | None = None, address: str | None = None,
    echo: Callable[[str], None] = print, study_path: str | None = None, wait: bool = False,
) -> StudyOutcome:
    """Run ``cfg`` end to end; every path is resolved against ``workdir`` (default: cwd). ``study_path``
    (the file as the user named it) goes into the report's ``kdtune rerun`` commands.

    The study accumulates: a new run adds ``search.budget`` trials to those stored (a grid adds what is
    left of it), and a run whose sweep was interrupted resumes that sweep instead. One driver runs a study
    at a time (``stages.lock``): another one refuses, or with ``wait`` waits for it to finish.
    """
    run = StudyRun(cfg, StudyPaths.of(cfg, workdir), echo=echo, study_path=study_path, address=address, wait=wait)
    try:
        run_stages(run, RUN_STAGES)
        run.status = "FINISHED"
    except (SweepInterrupted, KeyboardInterrupt):
        run.status = "KILLED"  # the sweep stays "running" in the study's log: the next run resumes it
        raise
    finally:
        _finish(run)
    return run.outcome()


def rebuild_report(
    cfg: StudyConfig, *, workdir: Path | None = None, echo: Callable[[str], None] = print, study_path: str | None = None
) -> StudyOutcome:
    """The report of every trial stored for ``cfg``, rebuilt without training anything (the teacher
    must be in the cache; latency is re-measured, AutoAttack runs only where it is missing)."""
    run = StudyRun(cfg, StudyPaths.of(cfg, workdir), echo=echo, study_path=study_path)
    run_stages(run, REPORT_STAGES)
    return run.outcome()


def rerun_trial(
    cfg: StudyConfig, trial_id: str, *, workdir: Path | None = None, echo: Callable[[str], None] = print
) -> tuple[dict[str, float], dict[str, float]]:
    """Retrain one stored trial from its recorded hyperparameters (no Ray) and evaluate it again.

    Returns (stored metrics, metrics of the rerun). Training is seeded and uses the trial's thread
    count, so accuracies reproduce; latency is re-measured and varies within noise.
    """
    run = StudyRun(cfg, StudyPaths.of(cfg, workdir), echo=echo)
    open_study(run, create=False)
    records = {r.trial_id: r for r in read_records(run)}
    if trial_id not in records:
        known = ", ".join(list(records)[:8]) + (" ..." if len(records) > 8 else "")
        raise KdtuneError(f"no trial '{trial_id}' is stored for study '{cfg.name}'; stored: {known or 'none'}")
    record = records[trial_id]
    load_data_and_teacher(run, train_teacher=False)
    record_teacher(run)  # a pretrained teacher whose weights changed since is refused
    echo(f"retraining trial {trial_id} ({', '.join(f'{k}={v}' for k, v in record.params.items())})")
    return record.metrics, retrain(run, record)


def run_stages(run: StudyRun, stages: Sequence[Stage]) -> None:
    """Each stage in order, over ``run``."""
    for stage in stages:
        stage(run)


def _finish(run: StudyRun) -> None:
    """Whatever stage the run stopped at: the report's process is closed, the sweep's MLflow parent run
    ends with the run's status, every queued MLflow write is flushed (failures are counted, not fatal),
    and the study's lock is released."""
    try:
        _close(run)
    finally:
        if run.lock is not None:
            run.lock.release()


def _close(run: StudyRun) -> None:
    if run.drawer is not None:
        run.drawer.close()  # unused if the study stopped before its report
    tracker = run.tracker
    if tracker is None:  # the run stopped before MLflow was opened
        return
    tracker.end_sweep(run.status)
    tracker.flush()
    if tracker.failures:
        run.echo(f"MLflow: {len(tracker.failures)} write(s) failed, first: {tracker.failures[0]}; "
                 "the report and the study's storage are complete")
