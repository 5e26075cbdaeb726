"""Search space -> OptunaSearch (multi-objective) -> Tuner, and the sweep's driver-side callbacks."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from kdtune.config import get_path
from kdtune.evaluate import metric_names
from kdtune.records import TrialRecord
from kdtune.trainable import FAILED_KEY, make_trainable

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
optuna.logging.set_verbosity(optuna.logging.WARNING)


def build_sampler(search: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group/multivariate TPE
    s = search.sampler
    if s.name == "grid":
        return optuna.samplers.GridSampler({p: d.choices for p, d in search.space.items()}, seed=seed)  # type: ignore[union-attr]
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size or 20, seed=seed)
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
    """OptunaSearch that tells Optuna FAIL for errored trials.

    Upstream turns a multi-objective errored trial with partial metrics into a list of Nones that
    Optuna rejects, leaving the Optuna trial RUNNING forever.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        error = error or bool(result and FAILED_KEY in result)
        if error and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._completed_trials.add(trial_id)
            try:
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.FAIL)
            except RuntimeError as err:  # the grid sampler's study.stop() outside optimize(): harmless
                log.debug("optuna tell: %s", err)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def build_searcher(cfg: StudyConfig) -> OptunaSearch:
    objectives = cfg.search.objectives
    return _Searcher(
        space=DefineByRun(cfg.search, cfg.to_raw()),
        metric=[o.metric for o in objectives],
        mode=[o.mode for o in objectives],
        sampler=build_sampler(cfg.search, cfg.seed),
    )


# Study-level sections, the same for every trial (the sweep's parent run has them).
NOT_TRIAL_PARAMS = ("search", "report", "tracking", "output", "description")


class TrackingCallback(tune.Callback):
    """Mirrors each trial into MLflow from the driver: params at start, metrics per report, end state."""

    def __init__(self, tracker: Tracker, cfg: StudyConfig) -> None:
        self.tracker, self.cfg = tracker, cfg

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        raw = self.cfg.with_overrides(trial.config).to_raw()
        params = _flatten({k: v for k, v in raw.items() if k not in NOT_TRIAL_PARAMS})
        tags = {"study": self.cfg.name, "method": cfg_method(self.cfg, trial.config)}
        self.tracker.start_trial(trial.trial_id, params, tags)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        metrics = {k: v for k, v in result.items() if "/" in k}
        self.tracker.log_metrics(trial.trial_id, metrics, step=int(result.get("epoch", 0)))
        provenance = _provenance(result)
        if provenance:
            self.tracker.set_tags(trial.trial_id, {f"provenance.{k}": v for k, v in provenance.items()})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
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

    def _line(self, trial: Any, status: str) -> None:
        self.done += 1
        total, elapsed = self.cfg.search.n_trials, time.monotonic() - self.start
        eta = elapsed / self.done * (total - self.done)
        result = trial.last_result or {}
        objs = "  ".join(
            f"{o.metric}={result[o.metric]:.4g}" for o in self.cfg.search.objectives if o.metric in result
        )
        self.echo(f"[{self.done}/{total}] trial {trial.trial_id} {status}  {objs}  (elapsed {elapsed:.0f}s, eta {eta:.0f}s)")

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


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (a running cluster) or start a local Ray bound to 127.0.0.1."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, _node_ip_address="127.0.0.1")


def run_sweep(
    cfg: StudyConfig,
    data: Dataset,
    teacher: torch.nn.Module,
    teacher_logits: torch.Tensor,
    *,
    storage: Path,
    run_name: str,
    callbacks: list[tune.Callback],
) -> list[TrialRecord]:
    """Run the Tune sweep and return one record per trial (Ray's record of it, not a log scrape)."""
    tuner = tune.Tuner(
        make_trainable(cfg, data, teacher, teacher_logits),
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(cfg),  # metric/mode on the searcher only (multi-objective)
            scheduler=FIFOScheduler(),  # early stopping would hand Optuna truncated objectives
            num_samples=cfg.search.n_trials,
            max_concurrent_trials=cfg.search.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=str(storage.resolve()),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    results = tuner.fit()
    known = set(metric_names(cfg.evaluation))
    return sorted((_record(r, known) for r in results), key=lambda rec: _trial_order(rec, results))


def _record(result: Any, known: set[str]) -> TrialRecord:
    """Ray's result of one trial as a TrialRecord (failed trials keep no partial metrics)."""
    reported = (result.metrics or {}).get(FAILED_KEY)
    failed = result.error is not None or reported is not None
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if k in known}
    return TrialRecord(
        trial_id=_trial_id(result),
        status="FAILED" if failed else "COMPLETE",
        params=dict(result.config or {}),
        metrics={} if failed else metrics,
        error=(reported or error_reason(result.error)) if failed else None,
        checkpoint=result.checkpoint.path if (result.checkpoint and not failed) else None,
        provenance=_provenance(result.metrics or {}),
    )


def _provenance(result: dict[str, Any]) -> dict[str, str]:
    """The trial's provenance fields (Tune flattens the reported dict to ``provenance/<key>``)."""
    nested = result.get("provenance")
    if isinstance(nested, dict):
        return {k: str(v) for k, v in nested.items()}
    return {k.split("/", 1)[1]: str(v) for k, v in result.items() if k.startswith("provenance/")}


def _trial_id(result: Any) -> str:
    if result.metrics and "trial_id" in result.metrics:
        return str(result.metrics["trial_id"])
    return Path(result.path).name.split("_")[2]  # run_trial_<id>_<n>_<params>...


def _trial_order(record: TrialRecord, results: Any) -> tuple[int, str]:
    """Trials in the order Tune created them (the counter in each trial's directory name)."""
    for r in results:
        parts = Path(r.path).name.split("_")
        if record.trial_id in parts:
            i = parts.index(record.trial_id)
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                return int(parts[i + 1]), record.trial_id
    return 1 << 30, record.trial_id


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
