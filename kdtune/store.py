"""The study's record, kept in its Optuna storage (SQLite by default, any SQLAlchemy URL).

Optuna's storage already holds every trial's sampled values and objectives for the sampler; kdtune adds
what the report needs, so that ``kdtune report STUDY`` and a later run of the same study see every trial
so far: each finished trial's record (a user attribute written before Optuna is told the outcome), the
teacher's metrics, the validation split's majority-class rate, metrics measured after a sweep (serial
latency, AutoAttack), the per-seed metrics of retrained trials (seed repeats, the ablation) and the log of
sweeps. Each complete trial also carries its constraint value for the sampler (``write_constraint``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from kdtune.cache import locked
from kdtune.errors import ConfigError, KdtuneError
from kdtune.records import Provenance, TrialRecord
from kdtune.search_cost import Span, sweep_seconds
from kdtune.urls import sqlite_path

RECORD = "kdtune.record"
TEACHER = "kdtune.teacher"
SWEEPS = "kdtune.sweeps"
TEACHER_WEIGHTS = "kdtune.teacher_weights"  # sha256 of a pretrained teacher's weights (file, or MLflow state_dict)
POST = "kdtune.post."  # + trial id
RUNS = "kdtune.runs."  # + arm + "." + trial id: a retrained trial's metrics, seed by seed
MAJORITY_RATE = "kdtune.majority_rate"  # the share of the validation split's most frequent label
CONSTRAINT = "kdtune"  # the one constraint each complete trial carries for the sampler (Trial.set_constraint)
RUNGS = "kdtune.rungs."  # + trial id: {epoch: {objective: value}} measured at early-stopping rungs


def storage_url(configured: str | None, workdir: Path) -> str:
    """The study file's ``output.optuna``, else ``sqlite:///<workdir>/.kdtune/optuna.db``."""
    if configured:
        return configured
    return f"sqlite:///{(workdir / '.kdtune' / 'optuna.db').resolve()}"


def _storage(url: str, engine: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``url``. Two drivers creating a shared database's tables at the same moment
    (PostgreSQL, MySQL: no file to lock) can see each other's half-made schema: the loser tries again."""
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except Exception as err:  # only a schema race is retried (re-raised otherwise)
            racing = any(w in str(err).lower() for w in ("already exists", "duplicate", "unique constraint"))
            if not racing or attempt == 2:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def open_study(url: str, name: str, directions: Sequence[str], *, create: bool = True) -> optuna.Study:
    """The persistent Optuna study ``name`` (created on first use unless ``create`` is false); its
    objectives must not change between runs."""
    schema_lock: Any = contextlib.nullcontext()
    engine: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise KdtuneError(f"no study '{name}' is stored in {redact(url)}; run the study first")
        # Two drivers creating a fresh file's tables at once both fail: one at a time, the second finds them.
        schema_lock = locked(path.with_name(f".{path.name}"), what="the study's storage")
        engine = {"connect_args": {"timeout": 60}}  # another driver's write: wait for it rather than fail
    try:
        with schema_lock:
            storage = _storage(url, engine)
        if not create and name not in optuna.study.get_all_study_names(storage):
            raise KdtuneError(f"no study '{name}' is stored in {redact(url)}; run the study first")
        study = optuna.create_study(storage=storage, study_name=name, directions=list(directions), load_if_exists=True)
    except KdtuneError:
        raise
    except Exception as err:  # noqa: BLE001 - any storage failure is the user's to fix
        raise KdtuneError(
            f"cannot open the study storage {redact(url)} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "check output.optuna in the study file"
        ) from None
    stored = [d.name.lower().removesuffix("imize") for d in study.directions]
    wanted = [d.removesuffix("imize") for d in directions]
    if stored != wanted:
        raise KdtuneError(
            f"study '{name}' in {redact(url)} was run with objectives {stored}, the study file now asks for {wanted}; "
            "rename the study (name:) to start a new one"
        )
    return study


def write_record(trial: optuna.Trial, record: TrialRecord) -> None:
    """Attach ``record`` to its (still running) Optuna trial, before the outcome is told."""
    trial.set_user_attr(RECORD, {
        "trial_id": record.trial_id, "status": record.status, "params": record.params,
        "metrics": {k: v for k, v in record.metrics.items() if math.isfinite(v)},
        "error": record.error, "provenance": record.provenance.as_dict() if record.provenance else {},
        "epochs": record.epochs,
    })  # fmt: skip


def enqueue(study: optuna.Study, points: Sequence[dict[str, Any]]) -> None:
    """Trials to run first, each with some searched values fixed (the sampler draws the rest): queued in the
    study once, so that a later run of the study queues them again only if they never ran."""
    for point in points:
        study.enqueue_trial(dict(point), skip_if_exists=True)


def write_constraint(trial: optuna.Trial, violation: float) -> None:
    """The trial's feasibility for the sampler, in Optuna's convention (feasible iff ``violation`` <= 0),
    set on the still running trial before its outcome is told: TPE, NSGA-II and GP read it from there
    (``FrozenTrial.constraints``). One value under one name for every trial, so that a study whose
    constraints change between runs still gives Optuna's GP the same constraint names on every trial."""
    trial.set_constraint(CONSTRAINT, violation)


def carries_constraints(study: optuna.Study) -> bool:
    """Whether every complete trial of ``study`` carries kdtune's constraint (vacuously, a new study does).
    Optuna's GP refuses a study whose complete trials carry different constraint names."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return all(CONSTRAINT in t.constraints for t in done)


def read_records(study: optuna.Study, students_dir: Path) -> list[TrialRecord]:
    """Every recorded trial of every sweep, in the order Optuna numbered them, with post-sweep metrics."""
    post = {k.removeprefix(POST): v for k, v in study.user_attrs.items() if k.startswith(POST)}
    rungs = read_rungs(study)
    trials = [t for t in study.get_trials(deepcopy=False) if RECORD in t.user_attrs]  # others: lost to a killed driver
    finished = [t.datetime_complete.timestamp() if t.datetime_complete else None for t in trials]
    records = []
    for trial, sweep_s in zip(trials, sweep_seconds(finished, sweep_spans(study))):
        raw = trial.user_attrs[RECORD]
        weights = students_dir / f"{raw['trial_id']}.pt"
        records.append(TrialRecord(
            trial_id=raw["trial_id"], status=raw["status"], params=raw["params"],
            metrics={**raw["metrics"], **post.get(raw["trial_id"], {})} if raw["status"] == "COMPLETE" else {},
            error=raw["error"], provenance=Provenance.from_dict(raw["provenance"]) if raw.get("provenance") else None,
            checkpoint=str(weights) if raw["status"] == "COMPLETE" and weights.exists() else None,
            epochs=raw.get("epochs"), rungs=rungs.get(raw["trial_id"], {}), sweep_s=sweep_s,
        ))  # fmt: skip
    return records


def save_post_metrics(study: optuna.Study, metrics: dict[str, dict[str, float]]) -> None:
    """Metrics measured after a sweep (``{trial_id: {name: value}}``), merged into what is stored."""
    for trial_id, values in metrics.items():
        stored = study.user_attrs.get(POST + trial_id, {})
        study.set_user_attr(POST + trial_id, {**stored, **{k: v for k, v in values.items() if math.isfinite(v)}})


def fail_orphans(study: optuna.Study) -> int:
    """Tell FAIL for each trial still RUNNING without a record: asked by a driver killed before it recorded the
    trial's outcome (after its searcher's last saved state, so the resumed sweep never tells it). Only when no
    trial of the study can still be running: after a sweep ended, under the study's driver lock. Returns how many."""
    orphans = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if RECORD not in t.user_attrs]
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


def save_runs(study: optuna.Study, arm: str, trial_id: str, runs: list[dict[str, float]]) -> None:
    """A trial's metrics seed by seed (``arm``: ``seeds`` as sampled, ``plain`` without distillation)."""
    study.set_user_attr(f"{RUNS}{arm}.{trial_id}", [{k: v for k, v in r.items() if math.isfinite(v)} for r in runs])


def read_runs(study: optuna.Study, arm: str) -> dict[str, list[dict[str, float]]]:
    """``{trial_id: runs}`` of every trial stored for ``arm`` (``save_runs``)."""
    prefix = f"{RUNS}{arm}."
    return {k.removeprefix(prefix): v for k, v in study.user_attrs.items() if k.startswith(prefix)}


def save_majority_rate(study: optuna.Study, rate: float) -> None:
    study.set_user_attr(MAJORITY_RATE, rate)


def majority_rate(study: optuna.Study) -> float | None:
    """The stored majority-class rate of the validation split; None for a study run before kdtune kept it."""
    rate = study.user_attrs.get(MAJORITY_RATE)
    return float(rate) if rate is not None else None

def save_rungs(study: optuna.Study, trial_id: str, rungs: dict[int, dict[str, float]]) -> None:
    """What ``trial_id`` measured at each rung it reached (``{epoch: {objective: value}}``), in place of what
    was stored for it."""
    study.set_user_attr(RUNGS + trial_id, {str(e): dict(v) for e, v in rungs.items()})


def read_rungs(study: optuna.Study) -> dict[str, dict[int, dict[str, float]]]:
    """``{trial_id: {epoch: {objective: value}}}`` for every trial of the study that reached a rung."""
    return {k.removeprefix(RUNGS): {int(e): dict(v) for e, v in by_epoch.items()}
            for k, by_epoch in study.user_attrs.items() if k.startswith(RUNGS)}


def save_teacher_metrics(study: optuna.Study, metrics: dict[str, float]) -> None:
    study.set_user_attr(TEACHER, {k: v for k, v in metrics.items() if math.isfinite(v)})


def keep_teacher_weights(study: optuna.Study, sha256: str, *, what: str = "teacher.weights") -> None:
    """Record the digest of the pretrained teacher's weights (``what``, named in the error); a study whose
    trials learned from other weights refuses them (its trials would not be comparable)."""
    stored = study.user_attrs.get(TEACHER_WEIGHTS)
    if stored is not None and stored != sha256:
        raise ConfigError(f"{what} changed since this study's earlier trials (sha256 {stored[:12]}... then, "
                          f"{sha256[:12]}... now); give the study another name: to start a new one")
    study.set_user_attr(TEACHER_WEIGHTS, sha256)


def sweeps(study: optuna.Study) -> list[dict[str, Any]]:
    """The log of sweeps: ``[{"name": "sweep-001", "status": "running" | "finished", "spans": [[start, end],
    ...]}, ...]``, a span per driver that ran it (unix seconds; end null while running or after a kill)."""
    return list(study.user_attrs.get(SWEEPS, []))


def set_sweep(study: optuna.Study, name: str, status: str) -> None:
    """Log sweep ``name`` as ``status``: "running" opens a span (a driver starts or resumes it), "finished"
    closes its last one."""
    log = sweeps(study)
    entry = next((s for s in log if s["name"] == name), {"name": name})
    spans = [list(span) for span in entry.get("spans", [])]
    if status == "running":
        spans.append([time.time(), None])
    elif spans and spans[-1][1] is None:
        spans[-1][1] = time.time()
    rest = [s for s in log if s["name"] != name]
    study.set_user_attr(SWEEPS, [*rest, {**entry, "status": status, "spans": spans}])


def sweep_spans(study: optuna.Study) -> list[Span]:
    """Every driver's run of every sweep, ``(start, end)`` in unix seconds (end None: running or killed)."""
    return [(float(a), None if b is None else float(b)) for s in sweeps(study) for a, b in s.get("spans", [])]


def redact(url: str) -> str:
    """``url`` without its password: ``postgresql://kd:***@db/kd``; anything else unchanged."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a database URL: nothing to hide
        return url
