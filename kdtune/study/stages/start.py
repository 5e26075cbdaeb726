"""Stage: start a study run: MLflow, Ray, data, teacher, the study's storage and this run's sweep plan."""

from __future__ import annotations

import concurrent.futures

from kdtune import store
from kdtune.config import with_overrides
from kdtune.errors import ConfigError
from kdtune.report import ReportProcess
from kdtune.spec import StudyConfig
from kdtune.study._run import StudyRun, SweepPlan
from kdtune.study._stored import (
    keep_majority_rate,
    load_data_and_teacher,
    open_study,
    read_records,
    record_teacher,
)
from kdtune.tracking import Tracker, artifact_root, default_uri


def start(run: StudyRun) -> None:
    """Open MLflow, reach Ray, load the data, load or train the teacher, open the study's storage (keeping
    the validation split's majority-class rate there) and plan the sweep; then open the sweep's MLflow
    parent run and start the report's process.

    Opening the MLflow store overlaps Ray's start-up and the teacher's loading, and a new SQLite store's
    schema (about a second of migrations) is built on the tracker's writer while the sweep starts; a store
    that cannot be opened or written still fails before any trial, and so does a bad Ray address.
    """
    from kdtune.sweep import init_ray  # ray is imported only when a sweep runs

    cfg, paths = run.cfg, run.paths
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kdtune-mlflow") as opener:
        uri = default_uri(cfg.tracking.uri, paths.workdir)
        opening = opener.submit(Tracker, uri, cfg.tracking.experiment or cfg.name,
                                artifact_root=artifact_root(uri, cfg.tracking.artifacts, paths.workdir),
                                defer_schema=True)
        init_ray(run.address, configured=cfg.ray.address, echo=run.echo)
        load_data_and_teacher(run)
        _check_teacher_taps(run)
        open_study(run)
        record_teacher(run)
        keep_majority_rate(run)
        run.plan = _plan(run)
        run.tracker = opening.result()
    run.run_name = run.plan.name
    run.tracker.write_in_background()  # MLflow writes leave the sweep's and the report's path
    params = _parent_params(cfg)
    if run.teacher.weights_sha256 is not None:
        params["teacher.weights_sha256"] = run.teacher.weights_sha256
    if cfg.teacher.mlflow_model is not None:
        params["teacher.mlflow_model"] = cfg.teacher.mlflow_model
    run.tracker.start_sweep(run.plan.name, params, {"study": cfg.name, "kind": "sweep"})
    run.drawer = ReportProcess()  # it loads its libraries while the trials run, at the lowest priority


def _check_teacher_taps(run: StudyRun) -> None:
    """Every feature method the study may run (its method, each searched ``method.name`` choice) names a
    teacher layer that exists and can be tapped: else one ``ConfigError`` line before any trial. A teacher
    from MLflow's ``pt2`` format is one exported graph, whose layers never run as modules."""
    from kdtune.exported import ExportedNet
    from kdtune.methods._taps import resolve_layer

    cfg, teacher = run.cfg, run.teacher.model
    space = cfg.search.space
    names = [cfg.method.name, *getattr(space.get("method.name"), "choices", [])]
    for name in dict.fromkeys(names):
        method = with_overrides(cfg, {"method.name": name}).method if name != cfg.method.name else cfg.method
        if "teacher_layer" not in method.params:
            continue
        layers = [method.params["teacher_layer"], *getattr(space.get("method.teacher_layer"), "choices", [])]
        if any(isinstance(m, ExportedNet) for m in teacher.modules()):
            raise ConfigError(f"method '{name}' taps the teacher's layers, but teacher.mlflow_model is an exported "
                              "graph (MLflow's pt2 format) whose layers cannot be tapped; use a logit method "
                              "(hinton, ...) or give the teacher as model + weights (its state_dict)")
        for layer in dict.fromkeys(layers):
            resolve_layer(teacher, str(layer), what=f"method '{name}': teacher_layer")


def _plan(run: StudyRun) -> SweepPlan:
    """Resume the last sweep if it was interrupted, else start the next one with the budget (a grid: what
    is left of it)."""
    from kdtune.sweep import can_resume

    cfg, sweeps = run.cfg, store.sweeps(run.optuna_study)
    if sweeps and sweeps[-1]["status"] == "running":
        name = sweeps[-1]["name"]
        if can_resume(run.paths.ray, name):
            run.echo(f"resuming the interrupted {name}: finished trials are kept, unfinished ones continue")
            return SweepPlan(name, cfg.search.n_trials, resume=True)
        run.echo(f"{name} was interrupted before Tune saved it whole; starting a new sweep (its finished trials "
                 "are kept)")
    name = f"sweep-{len(sweeps) + 1:03d}"
    done = len(read_records(run))
    n_trials = cfg.search.n_trials
    if cfg.search.sampler.name == "grid":  # the grid is shared by every sweep: run what is left of it
        n_trials = max(0, cfg.search.n_trials - done)
    run.echo(f"{name}: {n_trials} new trial(s) on top of {done} stored" if done else f"{name}: {n_trials} trial(s)")
    return SweepPlan(name, n_trials, resume=False)


def _parent_params(cfg: StudyConfig) -> dict[str, str]:
    """The sweep's parent-run params: each top-level section, with passwords in URLs redacted."""
    raw = cfg.to_raw()
    raw["tracking"]["uri"] = store.redact(raw["tracking"]["uri"]) if raw["tracking"]["uri"] else None
    raw["output"]["optuna"] = store.redact(raw["output"]["optuna"]) if raw["output"]["optuna"] else None
    return {k: str(v) for k, v in raw.items()}
