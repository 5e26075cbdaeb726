"""The Ray Tune trainable: sampled config -> typed config -> train -> report (one trial)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import torch
from ray import tune
from torch import nn

from kdtune.errors import KdtuneError
from kdtune.evaluate import measure_latency
from kdtune.methods import MethodContext
from kdtune.pipeline import run_student
from kdtune.teacher import cache_dir, frozen

if TYPE_CHECKING:
    from kdtune.config import StudyConfig
    from kdtune.data import Dataset

STUDENT_FILE = "student.pt"
CONFIG_FILE = "overrides.json"
# A deterministic failure (NaN loss, a bad configuration): reported as the trial's final result so the
# sweep records it at once; Ray's retries are kept for failures of the infrastructure (a dead worker).
FAILED_KEY = "kdtune/error"


def make_trainable(cfg: StudyConfig, data: Dataset, teacher: nn.Module, teacher_logits: torch.Tensor) -> Any:
    """The study's trainable with data, teacher and its logits shipped once through Ray's object store."""
    trainable = tune.with_parameters(
        run_trial, study=cfg, data=data, teacher=teacher.cpu(), teacher_logits=teacher_logits.cpu()
    )
    return tune.with_resources(trainable, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})


def trial_device() -> torch.device:
    """The device Ray assigned to this trial: its first GPU if it got one, else the CPU."""
    return torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")


def run_trial(
    config: dict[str, Any], *, study: StudyConfig, data: Dataset, teacher: nn.Module, teacher_logits: torch.Tensor
) -> None:
    """One trial: ``config`` maps searched YAML paths to sampled values."""
    cfg = study.with_overrides(config)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))  # never more threads than Ray gave us
    device = trial_device()
    data = data.to(device)
    ctx = MethodContext(
        data=data, teacher=frozen(teacher, device), teacher_logits=teacher_logits.to(device),
        student_spec=cfg.student, seed=cfg.seed, cache=cache_dir(cfg.output.cache),
    )

    def on_epoch(epoch: int, stats: dict[str, float]) -> None:
        tune.report({**stats, "epoch": epoch})

    try:
        run = run_student(cfg, ctx, on_epoch=on_epoch)
    except KdtuneError as err:
        tune.report({FAILED_KEY: str(err)})
        return
    # In-trial latency is the searcher's signal only; the report re-measures serially afterwards.
    latency = measure_latency({"student": run.student}, data.input_shape, cfg.evaluation.latency, device=device)
    final = {**run.metrics, **latency["student"], "epoch": cfg.student.epochs, "provenance": run.provenance}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(run.student.state_dict(), Path(tmp) / STUDENT_FILE)
        (Path(tmp) / CONFIG_FILE).write_text(json.dumps(config, sort_keys=True))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))
