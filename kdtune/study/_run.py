"""The run object every stage of a study reads and fills in: ``StudyRun``, with its paths and outcome."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdtune import store
from kdtune.cache import cache_dir
from kdtune.feasibility import Feasibility
from kdtune.pareto import front_mask
from kdtune.records import Ablation, TrialRecord
from kdtune.spec import StudyConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from kdtune.data import Dataset
    from kdtune.onnx_latency import OnnxModel
    from kdtune.report import ReportProcess
    from kdtune.study._lock import DriverLock
    from kdtune.teacher import Teacher
    from kdtune.tracking import Tracker


@dataclass(frozen=True)
class StudyPaths:
    """Where a study keeps everything, resolved against one working directory."""

    workdir: Path
    storage: str  # the study's Optuna storage URL (output.optuna)
    ray: Path  # the study's Tune experiments, one folder per sweep (output.ray/<name>)
    reports: Path  # output.reports/<name>
    cache: Path  # teachers, helper models, synthetic sets (output.cache)

    @classmethod
    def of(cls, cfg: StudyConfig, workdir: Path | None = None) -> StudyPaths:
        workdir = (workdir or Path.cwd()).resolve()
        return cls(
            workdir=workdir,
            storage=store.storage_url(cfg.output.optuna, workdir),
            ray=(workdir / cfg.output.ray / cfg.name).resolve(),
            reports=workdir / cfg.output.reports / cfg.name,
            cache=cache_dir(cfg.output.cache),
        )

    @property
    def students(self) -> Path:
        """Where each finished trial's student weights are kept (``<trial id>.pt``), across sweeps."""
        return self.ray / "students"


@dataclass(frozen=True)
class SweepPlan:
    """What this run's sweep does: its name, how many trials it adds, and whether it resumes."""

    name: str
    n_trials: int
    resume: bool


@dataclass(frozen=True)
class SweepPace:
    """How fast a run's sweep went: the trials that ended in it (complete, failed or stopped early) over its
    wall time, with the resources behind that figure."""

    trials: int
    seconds: float
    per_trial: str  # what each trial asked Ray for: "1 CPU", "1 CPU + 0.25 GPU"
    at_once: int  # search.max_concurrent
    cluster: str  # what Ray had when the sweep started: "1 node(s), 2 CPU(s), 0 GPU(s)"

    @property
    def per_hour(self) -> float:
        return self.trials * 3600.0 / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        trials = f"{self.trials} trial{'' if self.trials == 1 else 's'}"
        return (f"{trials} ended in {self.seconds:.1f} s of sweep: {self.per_hour:,.0f} trials/hour "
                f"({self.per_trial} per trial, up to {self.at_once} at once; Ray: {self.cluster})")


@dataclass(frozen=True)
class StudyOutcome:
    records: list[TrialRecord]
    report: dict[str, Path]
    hypervolume: float
    teacher_metrics: dict[str, float]
    run_name: str
    pace: SweepPace | None = None  # None where no sweep ran (a rebuilt report, a complete grid)
    mlflow_link: str | None = None  # MLflow's UI on the study's runs table (None without a store)


@dataclass(eq=False)
class StudyRun:
    """One run of a study, handed through its stages (``kdtune.study.stages``): the config and paths it
    starts from, and what each stage adds (data, teacher, tracker, records, post-sweep metrics, report).

    A field is None (or empty) until the stage that fills it has run.
    """

    cfg: StudyConfig
    paths: StudyPaths
    echo: Callable[[str], None] = print
    study_path: str | None = None  # the study file as the user named it (the report's rerun commands)
    address: str | None = None  # --address: a Ray cluster
    wait: bool = False  # --wait: wait for another driver of this study to finish instead of refusing
    lock: DriverLock | None = None  # this driver's hold on the study (kdtune.study.stages.lock)
    started: float = field(default_factory=time.monotonic)
    data: Dataset | None = None
    teacher: Teacher | None = None
    optuna_study: Any = None  # the study's record in its Optuna storage (kdtune.store)
    tracker: Tracker | None = None
    drawer: ReportProcess | None = None  # draws the report in its own process
    plan: SweepPlan | None = None
    pace: SweepPace | None = None
    run_name: str = "-"
    records: list[TrialRecord] = field(default_factory=list)
    students: dict[str, nn.Module] = field(default_factory=dict)  # complete trials' students, on the CPU
    teacher_metrics: dict[str, float] = field(default_factory=dict)
    # The teacher's and the students' ONNX exports, by trial id (the teacher's under serial_latency.TEACHER):
    # made once by the serial latency (runtime onnxruntime), then written and logged from memory.
    onnx: dict[str, OnnxModel] = field(default_factory=dict)
    onnx_files: dict[str, Path] = field(default_factory=dict)  # the files of the front and the teacher, same keys
    majority_rate: float | None = None  # the validation split's majority-class share (kept in the study's storage)
    flags: dict[str, list[str]] = field(default_factory=dict)  # gradient-masking findings per model
    ablation: dict[str, Ablation] = field(default_factory=dict)  # trial id -> it against its ce twin
    report: dict[str, Path] = field(default_factory=dict)
    hypervolume: float = 0.0
    status: str = "FAILED"  # of the sweep's MLflow parent run

    @cached_property
    def teacher_logits(self) -> torch.Tensor:
        """(N_train, K): the teacher's logits on the training split (computed once)."""
        from kdtune.evaluate import logits_of

        return logits_of(self.teacher.model, self.data.train)

    @property
    def feasibility(self) -> Feasibility:
        """The study's constraints and majority-class floor: which trials may be on the front."""
        return Feasibility(tuple(self.cfg.search.constraints), self.majority_rate)

    def front(self) -> np.ndarray:
        """Bool (n,): the records on the Pareto front of the feasible trials."""
        return front_mask(self.records, self.cfg.objectives, self.feasibility.mask(self.records))

    def add_metrics(self, extra: dict[str, dict[str, float]]) -> None:
        """Merge ``extra[trial_id]`` into those trials' metrics."""
        self.records = [dataclasses.replace(r, metrics={**r.metrics, **extra[r.trial_id]}) if r.trial_id in extra
                        else r for r in self.records]

    def outcome(self) -> StudyOutcome:
        link = self.tracker.runs_link() if self.tracker is not None else None
        return StudyOutcome(self.records, self.report, self.hypervolume, self.teacher_metrics, self.run_name,
                            self.pace, link)
