"""The sweep: a Ray Tune ``Tuner`` over the study's trainable, searched by Optuna, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import JsonLoggerCallback

from kdtune.compat import setup
from kdtune.compat.tune import restore_callbacks
from kdtune.errors import SweepInterrupted
from kdtune.sweep._callbacks import error_reason
from kdtune.sweep._job import SweepJob
from kdtune.sweep._moasha import build_scheduler
from kdtune.sweep._searcher import build_searcher, provenance, pruned_at
from kdtune.sweep._trainable import FAILED_KEY, make_trainable


def run_sweep(job: SweepJob, callbacks: list[tune.Callback]) -> dict[str, str]:
    """Run (or, with ``job.resume``, continue) the Tune sweep ``job.run_name``; each trial records itself in
    the study's storage. Returns ``{trial_id: reason}`` for the trials whose Ray worker failed."""
    setup()  # Tune's environment, before any Tuner is made (the CLI has done it already)
    trainable = make_trainable(job)
    path = job.storage.resolve() / job.run_name
    callbacks = [*callbacks, JsonLoggerCallback()]
    cfg = job.cfg
    if job.resume:
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
        restore_callbacks(tuner, callbacks)  # the pickled ones hold stale state
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=build_searcher(cfg, job.optuna_storage, job.feasibility),  # metric/mode: searcher only
                # MO-ASHA's stopped trials are told to Optuna as PRUNED, never with truncated objectives; a
                # restored sweep's scheduler loads its rung state from the study's storage
                scheduler=build_scheduler(cfg, job.optuna_storage),
                num_samples=job.n_trials,
                max_concurrent_trials=cfg.search.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=job.run_name,
                storage_path=str(job.storage.resolve()),
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
                # two: a kill -9 while the newest is being written leaves the previous one intact
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=0,
            ),
        )
    results = tuner.fit()
    # Tune returns normally after Ctrl-C, with the sweep unfinished; a trial stopped by it can even count
    # as terminated, so a trial has ended only if it errored, made its final report or was stopped at a rung.
    ended = sum(1 for r in results if r.error is not None or final_report(r.metrics or {})
                or pruned_at(r.metrics or {}) is not None)
    if ended < job.n_trials:
        raise SweepInterrupted(
            f"interrupted: {ended} of {job.n_trials} trials of {job.run_name} ended and are stored; "
            "run the same command again to resume"
        )
    return {Path(r.path).name: error_reason(r.error) for r in results if r.error is not None}


def final_report(result: dict[str, Any]) -> bool:
    """Whether a trial's last result is its final report (it alone carries the provenance; per-epoch
    reports carry training metrics, which may include an objective such as val/acc) or a failure."""
    return FAILED_KEY in result or bool(provenance(result))


def can_resume(storage: Path, run_name: str) -> bool:
    """Whether Tune left a restorable experiment for ``run_name`` (an interrupted sweep). Not when a kill -9
    tore its searcher's saved state (an empty ``searcher-state-*.pkl``): Tune restores such a sweep with a
    searcher that never suggests its next trial, and the resumed sweep waits forever."""
    path = storage.resolve() / run_name
    torn = any(f.stat().st_size == 0 for f in path.glob("searcher-state-*.pkl"))
    return not torn and tune.Tuner.can_restore(str(path))
