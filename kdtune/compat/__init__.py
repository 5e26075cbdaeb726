"""Every use of a private API of Ray, Optuna or torch, in one place, checked against the versions kdtune
supports; and ``setup()``, the process-wide settings a study needs (called by the CLI, never at import).

Nothing else in kdtune touches a private name of these libraries. A version outside the supported range
gets one line naming the range and the install command (``check_versions``).

Why each private use is here:

- Ray Tune: ``Tuner.restore`` brings back the pickled callbacks of the interrupted run, whose state is
  stale; ``restore_callbacks`` replaces them on the restored tuner's run config. ``OptunaSearch`` keeps
  its Optuna trials in ``_ot_trials``/``_ot_study``: ``optuna_trial``, ``tell_failed`` reach them (a
  failed multi-objective trial would otherwise stay RUNNING in Optuna). Tune's trainable actor imports
  IPython only to clear a shell that a Ray worker never has (``skip_ipython_in_trials``, 0.3 s a trial).
- Optuna: the exact hypervolume (``compute_hypervolume``) has no public home.
- torch: optimizers stepped without importing ``torch._dynamo`` (``kdtune.compat.optim``); ONNX export through
  the deprecated TorchScript exporter, 50x faster than its successor, which is the fallback (``kdtune.compat.onnx``).

Submodules: ``tune`` (Ray Tune), ``hypervolume`` (Optuna), ``optim`` and ``onnx`` (torch). This module imports
none of the three libraries, so the CLI can report a broken install of any of them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from importlib import metadata

from packaging.version import Version

from kdtune.errors import KdtuneError

# distribution -> (lowest supported, first unsupported), as pyproject.toml pins them
SUPPORTED = {"ray": ("2.40", "3"), "optuna": ("4.4", "6"), "torch": ("2.4", "3")}
INSTALL = {"ray": "ray[tune]", "optuna": "optuna", "torch": "torch"}


@functools.cache
def check_version(dist: str) -> str:
    """The installed version of ``dist``; one line naming the supported range if it is outside it."""
    low, high = SUPPORTED[dist]
    try:
        found = metadata.version(dist)
    except metadata.PackageNotFoundError:
        found = "none"
    if found == "none" or not Version(low) <= Version(found) < Version(high):
        raise KdtuneError(f"kdtune supports {dist} >={low},<{high}, found {found}; install a supported version: "
                          f"pip install '{INSTALL[dist]}>={low},<{high}'")
    return found


def check_versions() -> None:
    for dist in SUPPORTED:
        check_version(dist)


# ---------------------------------------------------------------- process-wide settings (the CLI's setup)
# Per-epoch reports carry training metrics only; the objectives arrive with the final report. Tune's strict
# check would reject the per-epoch ones, so it is off; kdtune.config checks the names at load.
# kdtune prints one line per finished trial (ProgressCallback): Tune's own tables and warnings are off.
# Of Tune's own loggers only the JSON one is kept (each trial's result.json, added by the sweep): its CSV and
# TensorBoard loggers repeat what MLflow has, for about 35 ms of the driver's time at every trial's end.
# The experiment is snapshot at every step (its state is small): a driver killed with -9 loses at most the
# step in flight, so a resumed sweep neither re-runs finished trials nor forgets started ones.
TUNE_ENVIRONMENT = {
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "0",
}
SYNC_LOGGERS = ("ray.train._internal.syncer", "ray.tune.execution.experiment_state")
CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"


def setup() -> None:
    """The settings a study's driver needs before Ray Tune starts (idempotent): Tune's environment
    (values already set by the user win), quiet Optuna, and ``BenignSyncRace`` on Tune's sync loggers."""
    for name, value in TUNE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tune warns when suggesting takes over a second; with the GP sampler it does, by design.
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group/multivariate TPE
    for name in SYNC_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, BenignSyncRace) for f in logger.filters):
            logger.addFilter(BenignSyncRace())
    controller = logging.getLogger(CONTROLLER_LOGGER)
    if not any(isinstance(f, OneLineRestore) for f in controller.filters):
        controller.addFilter(OneLineRestore())


class OneLineRestore(logging.Filter):
    """Tune's report that it could not restore a sweep's saved state, and starts it afresh, as one line
    naming the cause instead of a traceback (the sweep goes on either way)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to restore the run state") and record.exc_info:
            error = record.exc_info[1]
            cause = str(error).splitlines()[0][:200] if str(error) else ""
            record.msg = "could not restore the sweep's saved state (%s: %s); Tune starts it afresh"
            record.args = (type(error).__name__, cause)
            record.exc_info, record.exc_text = None, None
        return True


class BenignSyncRace(logging.Filter):
    """Drops Tune's report (with a traceback) that a background copy of the experiment's state to the
    storage path failed because a file vanished, when that file was one of Tune's own atomic-save
    temporaries (``.<uuid>-tmp-<name>``).

    Tune writes each snapshot next to the Ray session and copies the folder to the storage path in a
    thread; with a snapshot at every step, the next snapshot can rename its temporary into place while
    the copy of the previous one is listing it. The next copy copies the renamed file, and ``Tuner.fit``
    ends with a copy it waits for. The syncer warns when it starts the next copy ("Last sync command
    failed"); a forced snapshot at the end of the sweep logs its failure as an error ("Saving experiment
    state to storage ... failed", the exception attached). Any other failed copy still warns.
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
