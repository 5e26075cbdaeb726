"""What every benchmark shares: the settings of a full or quick run, the data, the trained teacher,
the harness study's configuration and a student initialisation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from benchmarks import hand

SEED = 0
STUDENT = "seed000_student"  # 784-64-10, 50,890 parameters
TEACHER = "seed000_teacher"  # 784-512-256-10, 535,818 parameters


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts; ``quick`` is for checking that the harness runs, not for numbers."""

    quick: bool
    step_repeats: int
    harness_repeats: int
    harness_trials: int
    epochs: int  # of the harness trials and of the trial robust_eval compares with
    dataset: dict[str, int]  # mnist_5k sizes (empty: the default 3,500 / 500 / 1,000)
    teacher_epochs: int
    eval_repeats: int
    latency_repeats: int
    hv_seeds: int
    hv_trials: int
    cost_seeds: int  # search_cost: replicates of the pareto study per scheduler
    cost_trials: int  # fifo's trials (moasha gets benchmarks.search_cost.MOASHA_TRIALS_PER_FIFO times as many)
    cost_epochs: int
    cost_constrained: bool  # keep the study's val/acc >= 0.85 (quick: a 1-epoch teacher on 512 images cannot)

    @classmethod
    def full(cls) -> Settings:
        return cls(quick=False, step_repeats=5, harness_repeats=5, harness_trials=8, epochs=10, dataset={},
                   teacher_epochs=10, eval_repeats=5, latency_repeats=5, hv_seeds=5, hv_trials=50,
                   cost_seeds=3, cost_trials=8, cost_epochs=9, cost_constrained=True)

    @classmethod
    def tiny(cls) -> Settings:
        return cls(quick=True, step_repeats=1, harness_repeats=1, harness_trials=2, epochs=1,
                   dataset={"n_train": 512, "n_val": 100, "n_test": 200}, teacher_epochs=1, eval_repeats=1,
                   latency_repeats=2, hv_seeds=2, hv_trials=12,
                   cost_seeds=1, cost_trials=2, cost_epochs=3, cost_constrained=False)


def study_raw(settings: Settings, cache: Path) -> dict[str, Any]:
    """The harness study: student KD (hinton) on the embedded data, one trial at a time, default
    evaluation (clean, PGD-20 and FGSM at eps 0.05 / 0.1 / 0.2, Jacobian norm, latency in eager PyTorch). Only the KD
    temperature and weight are searched, so every trial costs the same as its hand-written twin."""
    return {
        "name": "bench_harness",
        "seed": SEED,
        "dataset": {"name": "mnist_5k", **settings.dataset},
        "teacher": {"model": {"name": TEACHER}, "epochs": settings.teacher_epochs, "batch_size": 64, "lr": 1.0e-3},
        "student": {"model": {"name": STUDENT}, "epochs": settings.epochs, "batch_size": 64, "lr": 1.0e-3},
        "method": {"name": "hinton", "temperature": 4.0, "alpha": 0.9},
        # eager PyTorch, as the hand-written study times (the default ONNX runtime: latency_width_slope)
        "evaluation": {"latency": {"runtime": "torch"}},
        "search": {
            "space": {
                "method.temperature": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
                "method.alpha": {"type": "float", "low": 0.1, "high": 1.0},
            },
            "objectives": [
                {"metric": "val/acc", "mode": "max"},
                {"metric": "val/robust_acc@0.1", "mode": "max"},
                {"metric": "latency/ms_b1", "mode": "min"},
            ],
            "budget": settings.harness_trials,
            "max_concurrent": 1,
        },
        "resources": {"cpu": 1, "gpu": 0},
        "output": {"cache": str(cache)},
    }


@dataclass(frozen=True)
class Bench:
    """Loaded once per run: the study config, data, frozen trained teacher and its cached logits."""

    settings: Settings
    root: Path  # scratch directory of this run
    cfg: Any  # kdtune.config.StudyConfig of the harness study
    data: Any  # kdtune.data.Dataset
    teacher: nn.Module
    teacher_logits: Tensor  # (N_train, K), the teacher's logits on the training split

    def student(self) -> nn.Module:
        """kdtune's student, seeded as a trial seeds it."""
        from kdtune.models import build_model

        torch.manual_seed(SEED)
        return build_model(STUDENT, {}, self.data.info)

    def hand_student(self) -> nn.Module:
        """The hand-written twin of ``student()``, with the same initial weights."""
        model = hand.MLP([64])
        copy_weights(self.student(), model)
        return model


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Parameters of ``src`` into ``dst`` in order (same layer shapes, possibly other names)."""
    with torch.no_grad():
        for a, b in zip(src.parameters(), dst.parameters(), strict=True):
            b.copy_(a)


def load_bench(settings: Settings, root: Path) -> Bench:
    from kdtune.config import load_study
    from kdtune.data import load_dataset
    from kdtune.teacher import frozen, load_or_train_teacher
    from kdtune.evaluate import logits_of

    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study_raw(settings, root / "cache")))
    cfg = load_study(path)
    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    teacher = load_or_train_teacher(cfg.teacher, data, seed=cfg.seed, root=root / "cache").model
    teacher = frozen(teacher, "cpu")
    return Bench(settings, root, cfg, data, teacher, logits_of(teacher, data.train.x))


def hand_teacher(bench: Bench) -> nn.Module:
    """The teacher as a plain-torch MLP (same weights), for the hand-written side."""
    model = hand.MLP([512, 256])
    copy_weights(bench.teacher, model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
