"""The early-stopping scheduler: multi-objective asynchronous successive halving (MO-ASHA) for Ray Tune.

Schmucker et al. 2021 (arXiv:2106.12639): asynchronous successive halving (Li et al. 2018, arXiv:1810.05934)
whose rungs rank trials by non-dominated sorting, ties inside a front broken by an epsilon-net
(``kdtune.mo_rank``). A trial reports at each of its rung epochs (min_epochs * eta^k) the study's objectives
measured cheaply there (``rung/<objective>``, ``kdtune.rungs``); it continues only if it ranks in the top
ceil(n / eta) of the n trials that have reached that rung so far, itself included, else it stops there.
Other results (per-epoch reports, the final one) are never ranked.

The rung results are the study's, kept in its Optuna storage (``kdtune.store.save_rungs``) before a decision
is acted on: a resumed sweep and every later sweep of the study rank against them (more evidence at each
rung, as ASHA intends). Tune re-creates a restored sweep's scheduler from the pickle made when the sweep
started, so the state is never pickled: it is loaded from the storage on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from kdtune import store
from kdtune.metrics import RUNG_EPOCH, at_rung
from kdtune.mo_rank import keep_at_rung
from kdtune.records import Objective

if TYPE_CHECKING:
    from kdtune.spec import StudyConfig


class MoashaScheduler(FIFOScheduler):
    """Stops a trial at a rung unless it ranks in the top 1/``eta`` there; trials start in FIFO order."""

    _supports_buffered_results = False  # every rung result must be seen when it is reported

    def __init__(self, objectives: Sequence[Objective], *, eta: int, storage: str, study_name: str) -> None:
        super().__init__()
        self.metrics, self.modes = [o.metric for o in objectives], [o.mode for o in objectives]
        self.eta, self.storage, self.study_name = eta, storage, study_name
        self._rungs: dict[str, dict[int, dict[str, float]]] | None = None  # trial -> epoch -> objective -> value
        self._study: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_rungs": None, "_study": None}  # the state lives in the storage

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if RUNG_EPOCH not in result:
            return TrialScheduler.CONTINUE  # not a rung: per-epoch stats or the final report
        values = {m: float(result[at_rung(m)]) for m in self.metrics}
        return self.decide(trial.trial_id, int(result[RUNG_EPOCH]), values)

    def decide(self, trial_id: str, epoch: int, values: dict[str, float]) -> str:
        """Record ``trial_id``'s objectives at the rung ``epoch`` (in memory and in the storage) and rank it
        among every trial that reached that rung: CONTINUE or STOP. Non-finite values cannot be ranked: STOP."""
        if not all(math.isfinite(v) for v in values.values()):
            return TrialScheduler.STOP
        rungs = self.rungs()
        mine = rungs.setdefault(trial_id, {})
        mine[epoch] = dict(values)  # a trial retried from an earlier checkpoint replaces its own entry
        store.save_rungs(self._storage_study(), trial_id, mine)
        ids = [t for t, by_epoch in rungs.items() if set(self.metrics) <= set(by_epoch.get(epoch, {}))]
        table = np.array([[rungs[t][epoch][m] for m in self.metrics] for t in ids])  # (n, m)
        keep = keep_at_rung(table, self.modes, self.eta, ids.index(trial_id))
        return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP

    def rungs(self) -> dict[str, dict[int, dict[str, float]]]:
        """Every rung result of the study so far (loaded from the storage on first use)."""
        if self._rungs is None:
            self._rungs = store.read_rungs(self._storage_study())
        return self._rungs

    def _storage_study(self) -> Any:
        if self._study is None:
            directions = [f"{mode}imize" for mode in self.modes]
            self._study = store.open_study(self.storage, self.study_name, directions, create=False)
        return self._study

    def debug_string(self) -> str:
        return f"Using MO-ASHA (reduction factor {self.eta}) on {', '.join(self.metrics)}."


def build_scheduler(cfg: StudyConfig, optuna_storage: str) -> TrialScheduler:
    """The sweep's scheduler for ``cfg.search.scheduler``: FIFO (every trial runs to its end) or MO-ASHA."""
    spec = cfg.search.scheduler
    if spec.name != "moasha":
        return FIFOScheduler()
    return MoashaScheduler(cfg.objectives, eta=spec.reduction_factor, storage=optuna_storage, study_name=cfg.name)
