"""One sweep of a study, as the sweep layer receives it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kdtune.data import Dataset
from kdtune.feasibility import Feasibility
from kdtune.spec import StudyConfig


@dataclass(frozen=True)
class SweepJob:
    """One sweep of a study: what its trials share and where it keeps its state.

    ``storage``: the folder of the study's Tune experiments (one per sweep, ``<storage>/<run_name>``);
    ``optuna_storage``: the study's Optuna storage URL; ``students_dir``: where each finished trial's
    weights go; ``resume``: continue the interrupted sweep ``run_name`` instead of starting it;
    ``feasibility``: the constraints and majority-class floor the sampler is told about (None: the
    study's constraints alone).
    """

    cfg: StudyConfig
    data: Dataset
    teacher: torch.nn.Module
    teacher_logits: torch.Tensor  # (N_train, K): the teacher's logits on the training split
    storage: Path
    run_name: str
    n_trials: int
    optuna_storage: str
    students_dir: Path
    resume: bool = False
    feasibility: Feasibility | None = None
