"""Search space -> OptunaSearch (multi-objective) -> Tuner, and the sweep's driver-side callbacks."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from kdtune import store
from kdtune.config import get_path
from kdtune.errors import KdtuneError, SweepInterrupted
from kdtune.evaluate import metric_names
from kdtune.records import TrialRecord
from kdtune.trainable import FAILED_KEY, STUDENT_FILE, carried_epochs, make_trainable

if TYPE_CHECKING:
    import torch

    from kdtune.config import SearchSpec, StudyConfig
    from kdtune.data import Dataset
    from kdtune.tracking import Tracker

log = logging.getLogger(__name__)
# Per-epoch reports carry training metrics only; the objectives arrive with the final report.
# Tune's strict check would reject the per-epoch ones, so it is off; load_study checks the names.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# kdtune prints one line per finished trial (ProgressCallback); silence Tune's own tables and warnings.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Of Tune's own loggers only the JSON one is kept (each trial's result.json, added in run_sweep): its CSV
# and TensorBoard loggers repeat what MLflow has, for about 35 ms of the driver's time at every trial's
# end, while the trial waits (TensorBoard's event files alone are 25 ms).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Snapshot the experiment at every step (its state is small): a driver killed with -9 loses at most the
# step in flight, so a resumed sweep neither re-runs finished trials nor forgets started ones.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Tune warns when suggesting takes over a second; with the GP sampler it does, by design (build_sampler).
warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")


class BenignSyncRace(logging.Filter):
    """Drops Tune's report (with a traceback) that a background copy of the experiment's state to the
    storage path failed because a file vanished, when that file was one of Tune's own atomic-save
    temporaries (``.<uuid>-tmp-<name>``).

    Tune writes each snapshot next to the Ray session and copies the folder to the storage path in a
    thread; with a snapshot at every step, the next snapshot can rename its temporary into place while
    the copy of the previous one is listing it. The next copy, a tenth of a second later, copies the
    renamed file, and ``Tuner.fit`` ends with a copy it waits for. The syncer warns when it starts the
    next copy ("Last sync command failed", the traceback in the message); a forced snapshot (at the end
    of the sweep) waits for the copy in flight first and logs its failure as an error ("Saving experiment
    state to storage ... failed", the exception attached), then copies again. Any other failed copy
    still warns.
    """

    # The name Tune gives the temporary (``ray.tune.utils.util._atomic_save``): ``.<uuid4>-tmp-<name>``.
    TEMPORARY = re.compile(r"/\.[0-9a-f-]+-tmp-")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Last sync command failed"):
            return not ("FileNotFoundError" in message and self.TEMPORARY.search(message))
        if message.startswith("Saving experiment state to storage") and record.exc_info:
            error = record.exc_info[1]
            return not (isinstance(error, FileNotFoundError) and self.TEMPORARY.search(str(error)))
        return True


for _name in ("ray.train._internal.syncer", "ray.tune.execution.experiment_state"):
    logging.getLogger(_name).addFilter(BenignSyncRace())


def build_sampler(search: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group/multivariate TPE
    s, kind = search.sampler, search.sampler_kind
    if kind == "grid":
        return optuna.samplers.GridSampler({p: d.choices for p, d in search.space.items()}, seed=seed)  # type: ignore[union-attr]
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size or 20, seed=seed)
    if kind == "gp":
        # Sample-efficient where trials are expensive: ahead of TPE and random search at 50 trials
        # (benchmarks/search.py); each suggestion fits a GP per objective (0.5-2 s on 2 cores, growing with
        # the trials), which is small next to a real trial; `tpe` is the cheaper choice for very short trials.
        return optuna.samplers.GPSampler(
            n_startup_trials=s.n_startup_trials or 10, seed=seed, warn_independent_sampling=False,
        )
    # TPE's default of 10 start-up trials would make a small study pure random search.
    n_startup = s.n_startup_trials or min(10, max(2, search.n_trials // 3))
    # group=True lets multivariate TPE model conditional (define-by-run) spaces per sub-space.
    return optuna.samplers.TPESampler(n_startup_trials=n_startup, multivariate=True, group=True, seed=seed)


class DefineByRun:
    """Optuna define-by-run space: each YAML path becomes one suggested parameter of that name.

    A conditional entry (``when``) is suggested only when the values sampled before it, or the
    study's fixed settings, satisfy its condition. A class rather than a closure so Tune can pickle
    the searcher into its experiment state.
    """

    def __init__(self, search: SearchSpec, base: dict[str, Any]) -> None:
        self.search, self.base = search, base

    def __call__(self, trial: optuna.Trial) -> None:
        chosen: dict[str, Any] = {}

        def value_at(path: str) -> Any:
            return chosen[path] if path in chosen else get_path(self.base, path)

        for path, d in self.search.space.items():
            if not d.active(value_at):
                continue
            if d.type == "float":
                chosen[path] = trial.suggest_float(path, d.low, d.high, log=d.log)
            elif d.type == "int":
                chosen[path] = trial.suggest_int(path, d.low, d.high, log=d.log, step=d.step)
            else:
                chosen[path] = trial.suggest_categorical(path, d.choices)


class _Searcher(OptunaSearch):
    """OptunaSearch that records each trial in the study's storage and tells Optuna FAIL for failures.

    The record (metrics, error, provenance) is attached to the Optuna trial before its outcome is told,
    so the storage alone rebuilds the report (``kdtune.store``). Upstream turns a multi-objective failed
    trial with partial metrics into a list of Nones that Optuna rejects, leaving it RUNNING forever.
    """

    def __init__(self, *args: Any, known: Sequence[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known = set(known)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._ot_trials or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        ot_trial = self._ot_trials[trial_id]
        record = _record(trial_id, ot_trial.params, result or {}, ray_error=error, known=self._known)
        try:
            store.write_record(ot_trial, record)
        except Exception as err:  # noqa: BLE001 - e.g. a trial already finished before a restore
            log.warning("could not record trial %s in the study storage: %s", trial_id, err)
        if record.status == "COMPLETE":
            return super().on_trial_complete(trial_id, result=result, error=False)
        self._completed_trials.add(trial_id)
        try:
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        except RuntimeError as err:  # the grid sampler's study.stop() outside optimize(): harmless
            log.debug("optuna tell: %s", err)


def _record(trial_id: str, params: dict[str, Any], result: dict[str, Any], *, ray_error: bool, known: set[str]) -> TrialRecord:
    """A trial's final result as a TrialRecord (a failed trial keeps no partial metrics)."""
    reported = result.get(FAILED_KEY)
    metrics = {k: float(v) for k, v in result.items() if k in known}
    if reported is None and not ray_error and len(metrics) == len(known):
        return TrialRecord(trial_id, "COMPLETE", dict(params), metrics, provenance=_provenance(result))
    reason = reported or (
        "the trial's Ray worker failed (retried up to resources.max_failures times); see its error.txt "
        "under the study's Ray storage" if ray_error else "the trial ended without its final metrics"
    )
    return TrialRecord(trial_id, "FAILED", dict(params), {}, error=reason, provenance=_provenance(result))


def _provenance(result: dict[str, Any]) -> dict[str, str]:
    """The trial's provenance fields (Tune flattens the reported dict to ``provenance/<key>``)."""
    nested = result.get("provenance")
    if isinstance(nested, dict):
        return {k: str(v) for k, v in nested.items()}
    return {k.split("/", 1)[1]: str(v) for k, v in result.items() if k.startswith("provenance/")}


def build_searcher(cfg: StudyConfig, optuna_storage: str) -> OptunaSearch:
    objectives = cfg.search.objectives
    return _Searcher(
        space=DefineByRun(cfg.search, cfg.to_raw()),
        metric=[o.metric for o in objectives],
        mode=[o.mode for o in objectives],
        sampler=build_sampler(cfg.search, cfg.seed),
        storage=optuna.storages.RDBStorage(optuna_storage),
        study_name=cfg.name,
        known=metric_names(cfg.evaluation),
    )


# Study-level sections, the same for every trial (the sweep's parent run has them).
NOT_TRIAL_PARAMS = ("search", "report", "tracking", "output", "description")


class TrackingCallback(tune.Callback):
    """Mirrors each trial into MLflow from the driver: params at start, metrics per report, end state and,
    from ``students_dir``, the student's weights (``student.pt``) as soon as the trial has finished."""

    def __init__(self, tracker: Tracker, cfg: StudyConfig, students_dir: Path | None = None) -> None:
        self.tracker, self.cfg, self.students_dir = tracker, cfg, students_dir

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        raw = self.cfg.with_overrides(trial.config).to_raw()
        params = _flatten({k: v for k, v in raw.items() if k not in NOT_TRIAL_PARAMS})
        tags = {"study": self.cfg.name, "method": cfg_method(self.cfg, trial.config)}
        self.tracker.start_trial(trial.trial_id, params, tags)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        earlier = [(int(e["epoch"]), {k: v for k, v in e.items() if "/" in k}) for e in carried_epochs(result)]
        metrics = {k: v for k, v in result.items() if "/" in k}  # epochs not reported before ride along
        self.tracker.log_steps(trial.trial_id, [*earlier, (int(result.get("epoch", 0)), metrics)])
        provenance = _provenance(result)
        if provenance:
            self.tracker.set_tags(trial.trial_id, {f"provenance.{k}": v for k, v in provenance.items()})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.students_dir is not None:  # written by the trial before its final report; none if it failed
            self.tracker.log_file_as(trial.trial_id, self.students_dir / f"{trial.trial_id}.pt", STUDENT_FILE)
        self.tracker.end_trial(trial.trial_id, error=(trial.last_result or {}).get(FAILED_KEY))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.end_trial(trial.trial_id, error=error_reason(trial))


def cfg_method(cfg: StudyConfig, overrides: dict[str, Any]) -> str:
    """The method a trial ran (the search may choose it)."""
    return str(overrides.get("method.name", cfg.method.name))


class ProgressCallback(tune.Callback):
    """One line per finished trial instead of Ray's status table."""

    def __init__(self, cfg: StudyConfig, echo: Callable[[str], None]) -> None:
        self.cfg, self.echo, self.done, self.start = cfg, echo, 0, time.monotonic()
        self.best: float | None = None  # of the first objective

    def _line(self, trial: Any, status: str) -> None:
        self.done += 1
        total, elapsed = self.cfg.search.n_trials, time.monotonic() - self.start
        eta = elapsed / self.done * (total - self.done)
        result = trial.last_result or {}
        objs = "  ".join(
            f"{o.metric}={result[o.metric]:.4g}" for o in self.cfg.search.objectives if o.metric in result
        )
        first = self.cfg.search.objectives[0]
        if first.metric in result and FAILED_KEY not in result:
            value = float(result[first.metric])
            better = self.best is None or (value > self.best if first.mode == "max" else value < self.best)
            self.best = value if better else self.best
        best = f"  best {first.metric} {self.best:.4g}" if self.best is not None else ""
        self.echo(f"[{self.done}/{total}] trial {trial.trial_id} {status}  {objs}{best}"
                  f"  (elapsed {elapsed:.0f}s, eta {eta:.0f}s)")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        failed = (trial.last_result or {}).get(FAILED_KEY)
        self._line(trial, f"FAILED: {failed}" if failed else "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, f"FAILED: {error_reason(trial)}")


def error_reason(trial_or_error: Any) -> str:
    """A one-line reason from a Ray trial (or error): the root exception's type and message."""
    err = getattr(trial_or_error, "error_file", None)
    text = ""
    if err and Path(err).exists():
        text = Path(err).read_text(errors="replace")
    elif trial_or_error is not None and not hasattr(trial_or_error, "trial_id"):
        text = str(trial_or_error)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "trial failed (no error message recorded)"


def resolve_address(flag: str | None, configured: str | None) -> tuple[str | None, str]:
    """The Ray address a sweep uses and where it came from: ``--address`` > ``ray.address`` in the study
    file > $RAY_ADDRESS > none (start a local Ray). ``local`` anywhere also means a local Ray."""
    env = os.environ.get("RAY_ADDRESS")
    for value, source in ((flag, "--address"), (configured, "ray.address"), (env, "$RAY_ADDRESS")):
        if value:
            return (None, source) if value == "local" else (value, source)
    return None, "default"


def init_ray(
    address: str | None, num_cpus: int | None = None, *, configured: str | None = None,
    echo: Callable[[str], None] = log.info,
) -> None:
    """Connect to the running cluster at the resolved address (``resolve_address``), or start a local
    Ray on 127.0.0.1; a Ray already initialized in this process (tests) is reused as it is.

    Ray 2.60 rewrites a 127.0.0.1 node address to the machine's IP and its GCS listens on every
    interface: its token authentication, not the address, keeps a local Ray private (docs/cluster.md).
    """
    if ray.is_initialized():
        where = ray.get_runtime_context().gcs_address
        echo(f"Ray: reusing the Ray already running in this process at {where} ({cluster_summary()})")
        return
    address, source = resolve_address(address, configured)
    if address is None:
        # address="local": $RAY_ADDRESS must not turn "start a local Ray" into "connect".
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
        echo(f"Ray: local on this machine ({cluster_summary()}); pass --address to use a cluster")
        return
    _check_reachable(address, source)
    try:  # an existing cluster decides its own CPUs and node IPs: no num_cpus / _node_ip_address here
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise KdtuneError(_no_cluster(address, source, str(err).strip().splitlines()[0][:200])) from err
    except (ValueError, RuntimeError, ray.exceptions.AuthenticationError) as err:  # ray[client], versions, token
        raise KdtuneError(f"cannot use the Ray cluster at {address} (from {source}): {str(err)[:400]}") from err
    echo(f"Ray: cluster at {address} (from {source}; {cluster_summary()})")


def _check_reachable(address: str, source: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds where Ray itself would retry for minutes: nothing listens at ``host:port``."""
    if address.startswith(("http://", "https://")):
        raise KdtuneError(
            f"Ray address {address} (from {source}) is a dashboard URL, which `ray job submit` takes; kdtune "
            "needs the cluster's own address: host:6379, ray://host:10001, or auto on a cluster node"
        )
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # Ray resolves these itself and fails fast
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise KdtuneError(_no_cluster(address, source, err.strerror or str(err))) from err


def _no_cluster(address: str, source: str, reason: str) -> str:
    drop = {"--address": "drop --address", "ray.address": "remove ray.address from the study file"}
    return (f"no Ray cluster reachable at {address} (from {source}: {reason}); start one there with "
            f"`ray start --head`, or {drop.get(source, 'unset RAY_ADDRESS')} to run locally")


def cluster_summary() -> str:
    """``3 node(s), 3 CPU(s), 0 GPU(s)``: what the connected Ray has right now."""
    n_nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    res = ray.cluster_resources()
    return f"{n_nodes} node(s), {res.get('CPU', 0):g} CPU(s), {res.get('GPU', 0):g} GPU(s)"


def run_sweep(
    cfg: StudyConfig,
    data: Dataset,
    teacher: torch.nn.Module,
    teacher_logits: torch.Tensor,
    *,
    storage: Path,
    run_name: str,
    n_trials: int,
    optuna_storage: str,
    students_dir: Path,
    callbacks: list[tune.Callback],
    resume: bool = False,
) -> dict[str, str]:
    """Run (or, with ``resume``, continue) the Tune sweep ``run_name``; each trial records itself in the
    study's storage. Returns ``{trial_id: reason}`` for the trials whose Ray worker failed."""
    trainable = make_trainable(cfg, data, teacher, teacher_logits, students_dir=students_dir)
    path = storage.resolve() / run_name
    callbacks = [*callbacks, JsonLoggerCallback()]
    if resume:
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
        tuner._local_tuner.get_run_config().callbacks = callbacks  # the pickled ones hold stale state
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=build_searcher(cfg, optuna_storage),  # metric/mode on the searcher only
                scheduler=FIFOScheduler(),  # early stopping would hand Optuna truncated objectives
                num_samples=n_trials,
                max_concurrent_trials=cfg.search.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=str(storage.resolve()),
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
                # two: a kill -9 while the newest is being written leaves the previous one intact
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=0,
            ),
        )
    results = tuner.fit()
    # Tune returns normally after Ctrl-C, with the sweep unfinished; a trial stopped by it can even count
    # as terminated, so a trial has ended only if it errored or made its final report.
    ended = sum(1 for r in results if r.error is not None or _final_report(r.metrics or {}))
    if ended < n_trials:
        raise SweepInterrupted(
            f"interrupted: {ended} of {n_trials} trials of {run_name} ended and are stored; "
            "run the same command again to resume"
        )
    return {Path(r.path).name: error_reason(r.error) for r in results if r.error is not None}


def _final_report(result: dict[str, Any]) -> bool:
    """Whether a trial's last result is its final report (it alone carries the provenance; per-epoch
    reports carry training metrics, which may include an objective such as val/acc) or a failure."""
    return FAILED_KEY in result or bool(_provenance(result))


def can_resume(storage: Path, run_name: str) -> bool:
    """Whether Tune left a restorable experiment for ``run_name`` (an interrupted sweep)."""
    return tune.Tuner.can_restore(str(storage.resolve() / run_name))


def _flatten(raw: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b.0": 1, "a.b.1": 2}`` (MLflow params)."""
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list) and raw:
        items = ((str(i), v) for i, v in enumerate(raw))
    else:
        return {prefix: raw}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
