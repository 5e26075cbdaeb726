"""The sweep's driver-side callbacks: every trial mirrored into MLflow, and one progress line per trial."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from kdtune.config import with_overrides
from kdtune.metrics import at_rung
from kdtune.spec import StudyConfig
from kdtune.sweep._searcher import provenance, pruned_at
from kdtune.sweep._trainable import FAILED_KEY, STUDENT_FILE, carried_epochs

if TYPE_CHECKING:
    from kdtune.tracking import Tracker


# Study-level sections, the same for every trial (the sweep's parent run has them).
NOT_TRIAL_PARAMS = ("search", "report", "tracking", "output", "description", "plugins")


class TrackingCallback(tune.Callback):
    """Mirrors each trial into MLflow from the driver: params at start, metrics per report, end state and,
    from ``students_dir``, the student's weights (``student.pt``) as soon as the trial has finished. A trial
    stopped at a rung ends KILLED, tagged ``kdtune.pruned_at_epoch``."""

    def __init__(self, tracker: Tracker, cfg: StudyConfig, students_dir: Path | None = None) -> None:
        self.tracker, self.cfg, self.students_dir = tracker, cfg, students_dir

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.start_trial(trial.trial_id, *trial_run_fields(self.cfg, trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        earlier = [(int(e["epoch"]), {k: v for k, v in e.items() if "/" in k}) for e in carried_epochs(result)]
        metrics = {k: v for k, v in result.items() if "/" in k}  # epochs not reported before ride along
        self.tracker.log_steps(trial.trial_id, [*earlier, (int(result.get("epoch", 0)), metrics)])
        learned_from = provenance(result)
        if learned_from:
            self.tracker.set_tags(trial.trial_id, {f"provenance.{k}": v for k, v in learned_from.items()})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.students_dir is not None:  # written by the trial before its final report; none if it failed
            self.tracker.log_file_as(trial.trial_id, self.students_dir / f"{trial.trial_id}.pt", STUDENT_FILE)
        last = trial.last_result or {}
        self.tracker.end_trial(trial.trial_id, error=last.get(FAILED_KEY), pruned_at_epoch=pruned_at(last))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.end_trial(trial.trial_id, error=error_reason(trial))


def trial_run_fields(cfg: StudyConfig, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A trial's MLflow run params (its whole configuration by dotted YAML path) and tags."""
    raw = with_overrides(cfg, overrides).to_raw()
    params = _flatten({k: v for k, v in raw.items() if k not in NOT_TRIAL_PARAMS})
    return params, {"study": cfg.name, "method": cfg_method(cfg, overrides)}


def cfg_method(cfg: StudyConfig, overrides: dict[str, Any]) -> str:
    """The method a trial ran (the search may choose it)."""
    return str(overrides.get("method.name", cfg.method.name))


class ProgressCallback(tune.Callback):
    """One line per finished trial instead of Ray's status table: ``[k/total]`` counts the trials of this
    sweep (what is left of a grid, or the budget), with the ETA of the rest."""

    def __init__(self, cfg: StudyConfig, echo: Callable[[str], None], *, total: int) -> None:
        self.cfg, self.echo, self.total = cfg, echo, total  # total: the trials this sweep runs
        self.done, self.start = 0, time.monotonic()
        self.best: float | None = None  # of the first objective

    def _line(self, trial: Any, status: str) -> None:
        self.done += 1
        total, elapsed = self.total, time.monotonic() - self.start
        eta = elapsed / self.done * (total - self.done)
        result = trial.last_result or {}
        objectives = self.cfg.search.objectives
        if pruned_at(result) is not None:  # its rung's cheap measurements, never a final value
            objs = "  ".join(f"{o.metric}={result[at_rung(o.metric)]:.4g}" for o in objectives
                             if at_rung(o.metric) in result)
            objs, result = f"at the rung: {objs}", {}
        else:
            objs = "  ".join(f"{o.metric}={result[o.metric]:.4g}" for o in objectives if o.metric in result)
        first = objectives[0]
        if first.metric in result and FAILED_KEY not in result:
            value = float(result[first.metric])
            better = self.best is None or (value > self.best if first.mode == "max" else value < self.best)
            self.best = value if better else self.best
        best = f"  best {first.metric} {self.best:.4g}" if self.best is not None else ""
        self.echo(f"[{self.done}/{total}] trial {trial.trial_id} {status}  {objs}{best}"
                  f"  (elapsed {elapsed:.0f}s, eta {eta:.0f}s)")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        failed, stopped = (trial.last_result or {}).get(FAILED_KEY), pruned_at(trial.last_result or {})
        if stopped is not None:
            self._line(trial, f"stopped early at its epoch-{stopped} rung (pruned)")
        else:
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
