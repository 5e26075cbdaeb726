"""Ray Tune + Optuna: one sweep of a study. The trainable runs one trial (``kdtune.student``), the
searcher (Optuna, multi-objective) picks each trial's configuration, the scheduler runs every trial to its end
(FIFO) or stops it early at a rung (MO-ASHA, ``search.scheduler``), and driver-side callbacks mirror the trials
into MLflow and print progress."""

from kdtune.sweep._callbacks import NOT_TRIAL_PARAMS, ProgressCallback, TrackingCallback, error_reason, trial_run_fields
from kdtune.sweep._cluster import cluster_summary, init_ray, resolve_address
from kdtune.sweep._moasha import MoashaScheduler, build_scheduler
from kdtune.sweep._searcher import build_searcher, provenance, pruned_at, trial_record
from kdtune.sweep._space import DefineByRun, build_sampler
from kdtune.sweep._trainable import FAILED_KEY, STUDENT_FILE, make_trainable
from kdtune.sweep._job import SweepJob
from kdtune.sweep._tuner import can_resume, final_report, run_sweep

__all__ = [
    "FAILED_KEY", "NOT_TRIAL_PARAMS", "STUDENT_FILE", "DefineByRun", "MoashaScheduler", "ProgressCallback", "SweepJob",
    "TrackingCallback", "build_sampler", "build_scheduler", "build_searcher", "can_resume", "cluster_summary",
    "error_reason", "final_report", "init_ray", "make_trainable", "provenance", "pruned_at", "resolve_address",
    "run_sweep", "trial_record", "trial_run_fields",
]
