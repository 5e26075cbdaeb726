"""The searcher: Ray Tune's ``OptunaSearch``, recording each finished trial in the study's storage."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from kdtune import store
from kdtune.compat.tune import optuna_study, optuna_trial, tell_failed, tell_pruned
from kdtune.feasibility import Feasibility
from kdtune.metrics import RUNG_EPOCH, trial_metric_names
from kdtune.records import Provenance, TrialRecord
from kdtune.spec import StudyConfig
from kdtune.sweep._space import DefineByRun, build_sampler
from kdtune.sweep._trainable import FAILED_KEY

log = logging.getLogger(__name__)


class _Searcher(OptunaSearch):
    """OptunaSearch that records each trial in the study's storage, tells Optuna FAIL for failures and
    PRUNED for trials the scheduler stopped at a rung (never complete with truncated values).

    The record (metrics, error, provenance) is attached to the Optuna trial before its outcome is told,
    so the storage alone rebuilds the report (``kdtune.store``), and so is a complete trial's feasibility
    (``feasibility``: the constraints and the majority-class floor), which TPE, NSGA-II and GP read to steer
    away from infeasible regions. Upstream turns a multi-objective failed trial with partial metrics into a
    list of Nones that Optuna rejects, leaving it RUNNING forever.
    """

    def __init__(self, *args: Any, known: Sequence[str], feasibility: Feasibility, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known = set(known)
        self._feasibility = feasibility
        self._steer: bool | None = None  # decided at the first outcome (``_steers``)

    def _steers(self) -> bool:
        """Whether complete trials get their constraint: not in a study whose earlier complete trials were
        told without one (before kdtune kept constraints), which Optuna's GP would refuse to model."""
        if self._steer is None:
            self._steer = store.carries_constraints(optuna_study(self))
            if not self._steer:
                log.warning("study %s has trials from before kdtune told Optuna its constraints: the sampler is not "
                            "steered by them (they still decide the front); give the study a new name: to steer it",
                            optuna_study(self).study_name)
        return self._steer

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = optuna_trial(self, trial_id)
        if ot_trial is None:
            return super().on_trial_complete(trial_id, result=result, error=error)
        record = trial_record(trial_id, ot_trial.params, result or {}, ray_error=error, known=self._known)
        try:
            store.write_record(ot_trial, record)
            if record.status == "COMPLETE" and self._steers():
                store.write_constraint(ot_trial, self._feasibility.violation(record.metrics))
        except Exception as err:  # noqa: BLE001 - e.g. a trial already finished before a restore
            log.warning("could not record trial %s in the study storage: %s", trial_id, err)
        if record.status == "COMPLETE":
            return super().on_trial_complete(trial_id, result=result, error=False)
        try:
            (tell_pruned if record.status == "PRUNED" else tell_failed)(self, trial_id)
        # the grid sampler's study.stop() outside optimize(), or a trial told before a kill -9 and resumed from
        # an older experiment state (Optuna: "Cannot tell a PRUNED trial"): harmless, the outcome stands
        except (RuntimeError, ValueError) as err:
            log.debug("optuna tell: %s", err)


def trial_record(
    trial_id: str, params: dict[str, Any], result: dict[str, Any], *, ray_error: bool, known: set[str]
) -> TrialRecord:
    """A trial's final result as a TrialRecord (a failed or pruned trial keeps no partial metrics; a pruned
    trial's rung measurements are stored by the scheduler, ``kdtune.store.read_rungs``)."""
    reported = result.get(FAILED_KEY)
    metrics = {k: float(v) for k, v in result.items() if k in known}
    if reported is None and not ray_error and len(metrics) == len(known):
        epochs = int(result["epoch"]) if "epoch" in result else None
        return TrialRecord(trial_id, "COMPLETE", dict(params), metrics, provenance=_learned(result), epochs=epochs)
    stopped = None if ray_error else pruned_at(result)
    if stopped is not None:
        return TrialRecord(trial_id, "PRUNED", dict(params), {}, epochs=stopped)
    reason = reported or (
        "the trial's Ray worker failed (retried up to resources.max_failures times); see its error.txt "
        "under the study's Ray storage" if ray_error else "the trial ended without its final metrics"
    )
    return TrialRecord(trial_id, "FAILED", dict(params), {}, error=reason, provenance=_learned(result))


def _learned(result: dict[str, Any]) -> Provenance | None:
    flat = provenance(result)
    return Provenance.from_dict(flat) if flat else None


def pruned_at(result: dict[str, Any]) -> int | None:
    """The rung epoch at which the scheduler stopped the trial whose last result is ``result`` (Tune marks
    ``done`` the result it stops a trial on); None for a final report, a failure, or a result that was not
    at a rung (e.g. the last one before a Ctrl-C)."""
    if not result.get("done") or RUNG_EPOCH not in result or FAILED_KEY in result or provenance(result):
        return None
    return int(result[RUNG_EPOCH])


def provenance(result: dict[str, Any]) -> dict[str, str]:
    """The trial's provenance in its flat form (``Provenance.as_dict``; Tune flattens the reported dict to
    ``provenance/<key>``); {} when the result carries none."""
    nested = result.get("provenance")
    if isinstance(nested, dict):
        return {k: str(v) for k, v in nested.items()}
    return {k.split("/", 1)[1]: str(v) for k, v in result.items() if k.startswith("provenance/")}


def build_searcher(cfg: StudyConfig, optuna_storage: str, feasibility: Feasibility | None = None) -> OptunaSearch:
    """The study's multi-objective ``OptunaSearch`` over its persistent Optuna study at ``optuna_storage``;
    its complete trials tell the sampler their ``feasibility`` (default: the constraints alone)."""
    objectives = cfg.search.objectives
    return _Searcher(
        space=DefineByRun(cfg.search, cfg.to_raw()),
        metric=[o.metric for o in objectives],
        mode=[o.mode for o in objectives],
        sampler=build_sampler(cfg.search, cfg.seed),
        storage=optuna.storages.RDBStorage(optuna_storage),
        study_name=cfg.name,
        known=trial_metric_names(cfg.evaluation),
        feasibility=feasibility or Feasibility(tuple(cfg.search.constraints)),
    )
