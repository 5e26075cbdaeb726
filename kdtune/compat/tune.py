"""Private Ray Tune APIs kdtune relies on (see ``kdtune.compat``)."""

from __future__ import annotations

import functools
import sys
from typing import Any

from kdtune.compat import check_version


def restore_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Give a restored ``Tuner`` this run's callbacks (the pickled ones hold the killed run's state)."""
    check_version("ray")
    tuner._local_tuner.get_run_config().callbacks = callbacks


def optuna_trial(searcher: Any, trial_id: str) -> Any | None:
    """The Optuna trial an ``OptunaSearch`` asked for Tune's ``trial_id``; None if it has none open
    (unknown, or already told)."""
    check_version("ray")
    if trial_id not in searcher._ot_trials or trial_id in searcher._completed_trials:
        return None
    return searcher._ot_trials[trial_id]


def optuna_study(searcher: Any) -> Any:
    """The Optuna study an ``OptunaSearch`` asks and tells."""
    check_version("ray")
    return searcher._ot_study


def tell_failed(searcher: Any, trial_id: str) -> None:
    """Tell the searcher's Optuna study that ``trial_id`` FAILED, and mark it done in the searcher."""
    import optuna

    ot_trial = searcher._ot_trials[trial_id]
    searcher._completed_trials.add(trial_id)
    searcher._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)


def tell_pruned(searcher: Any, trial_id: str) -> None:
    """Tell the searcher's Optuna study that ``trial_id`` was PRUNED (stopped early, no objective values:
    Optuna takes that in a multi-objective study through ask/tell), and mark it done in the searcher."""
    import optuna

    ot_trial = searcher._ot_trials[trial_id]
    searcher._completed_trials.add(trial_id)
    searcher._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)


def skip_ipython_in_trials() -> None:
    """Tune's ``Trainable`` calls ``disable_ipython`` in every trial actor, which imports IPython (0.3 s,
    where it is installed) to clear a shell that a fresh Ray worker does not have; only a process that
    has loaded IPython can have one. Ray runs it in each worker of a study's job before any actor starts
    (``worker_process_setup_hook``, ``kdtune.sweep``); idempotent."""
    check_version("ray")
    from ray.tune.trainable import trainable as tune_trainable

    disable = getattr(tune_trainable, "disable_ipython", None)
    if disable is None or getattr(disable, "_kdtune", False):
        return

    @functools.wraps(disable)
    def disable_if_loaded() -> None:
        if "IPython" in sys.modules:
            disable()

    disable_if_loaded._kdtune = True  # type: ignore[attr-defined]
    tune_trainable.disable_ipython = disable_if_loaded
