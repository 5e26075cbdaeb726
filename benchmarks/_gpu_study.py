"""The GPU packing benchmark's one configuration: sizes, a synthetic CIFAR-shaped data set and its study.

Stdlib, NumPy and PyYAML only (no torch, no kdtune): the driver writes these files before any worker starts.
The data is synthetic so that nothing has to be downloaded or carried to the GPU machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SEED = 0
N_CLASSES = 10
EPS = 0.03  # ~8/255, the usual CIFAR-10 L-inf radius
MIX = 0.8  # weight of the other class's pattern in an image
NOISE = 2.0  # pixel noise (standard deviation, before the squashing into (0, 1))


@dataclass(frozen=True)
class Sizes:
    """What one trial trains and evaluates; ``full`` for a GPU, ``tiny`` to check that the benchmark runs."""

    side: int  # images are 3 x side x side
    n_train: int
    n_val: int
    n_test: int
    teacher_epochs: int
    epochs: int  # of each trial's student
    batch_size: int
    attack_steps: int  # PGD steps of the student's adversarial training; 0: none
    augment: bool  # the student's CIFAR recipe (random crop, flip); the teacher then runs live on each batch
    eval_pgd_steps: int
    n_jacobian: int
    latency: dict[str, Any]  # evaluation.latency of the study

    @classmethod
    def full(cls) -> Sizes:
        return cls(side=32, n_train=10_000, n_val=1_000, n_test=1_000, teacher_epochs=2, epochs=6, batch_size=128,
                   attack_steps=5, augment=True, eval_pgd_steps=10, n_jacobian=256,
                   latency={"runtime": "torch", "batch_sizes": [1, 256], "warmup": 10, "repeats": 3, "n_calls": 10})

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(side=16, n_train=256, n_val=64, n_test=64, teacher_epochs=1, epochs=1, batch_size=64,
                   attack_steps=2, augment=True, eval_pgd_steps=2, n_jacobian=16,
                   latency={"runtime": "torch", "batch_sizes": [1], "warmup": 1, "repeats": 1, "n_calls": 1})

    def with_changes(self, **changes: int | bool | None) -> Sizes:
        """These sizes with the given fields replaced (None: kept)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_images(n: int, side: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 3, side, side) uint8 and labels (n,) int64: class prototypes with structure to learn.

    Each class is a smooth random colour pattern (4x4 per channel, upsampled); an image is its class's pattern,
    shifted by up to side/8 pixels, scaled in contrast, mixed with another class's pattern (weight ``MIX``),
    plus pixel noise (``NOISE``): a LightNN trained on 3,000 of them for 2 epochs reaches ~73% val accuracy.
    The prototypes come from ``SEED`` (the same classes in every split), the draws from ``seed``.
    """
    protos = np.random.default_rng(SEED).normal(size=(N_CLASSES, 3, 4, 4))
    protos = protos.repeat(side // 4, axis=2).repeat(side // 4, axis=3)  # (K, 3, side, side)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=n)
    other = (y + rng.integers(1, N_CLASSES, size=n)) % N_CLASSES  # never the image's own class
    x = rng.uniform(0.6, 1.4, size=(n, 1, 1, 1)) * protos[y] + MIX * protos[other]
    shift = side // 8
    for i, (dy, dx) in enumerate(rng.integers(-shift, shift + 1, size=(n, 2))):
        x[i] = np.roll(x[i], (int(dy), int(dx)), axis=(1, 2))
    x += rng.normal(scale=NOISE, size=x.shape)
    pixels = 1 / (1 + np.exp(-x))  # into (0, 1)
    return (pixels * 255).round().astype(np.uint8), y.astype(np.int64)


def write_data(path: Path, sizes: Sizes) -> Path:
    """The synthetic splits as the ``.npz`` kdtune's ``arrays`` data set reads; kept if already there."""
    if path.exists():
        return path
    splits = {"train": sizes.n_train, "val": sizes.n_val, "test": sizes.n_test}
    arrays: dict[str, np.ndarray] = {}
    for k, (split, n) in enumerate(splits.items()):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = synthetic_images(n, sizes.side, seed=SEED + 1 + k)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def study_raw(sizes: Sizes, data: Path, cache: Path) -> dict[str, Any]:
    """The study of the measured trial: DeepNN teacher -> LightNN student (the PyTorch KD tutorial's CIFAR-10
    pair), Hinton KD with PGD adversarial training (and the CIFAR augmentation, with the teacher run live on
    each augmented batch), evaluated as a sweep's trial is (clean and PGD / FGSM
    accuracy on val and test, Jacobian norm, in-trial latency in eager PyTorch on the trial's device)."""
    train = {"batch_size": sizes.batch_size, "lr": 1.0e-3}
    pgd = {"name": "pgd", "eps": EPS, "alpha": EPS / 4, "steps": max(sizes.attack_steps, 1)}
    return {
        "name": "gpu_packing",
        "seed": SEED,
        "dataset": {"name": "arrays", "path": str(data)},
        "teacher": {"model": {"name": "deepnn"}, "epochs": sizes.teacher_epochs, **train},
        "student": {"model": {"name": "lightnn"}, "epochs": sizes.epochs, **train,
                    **({"augment": {"crop_padding": sizes.side // 8}} if sizes.augment else {})},
        "method": {"name": "hinton", "temperature": 4.0, "alpha": 0.9},
        "adversary": {"enabled": sizes.attack_steps > 0, "attack": pgd},
        "evaluation": {"eps": [EPS], "pgd_steps": sizes.eval_pgd_steps, "n_jacobian": sizes.n_jacobian,
                       "latency": sizes.latency},
        "search": {  # not searched here: every trial runs this one configuration
            "space": {"method.temperature": {"type": "float", "low": 1.0, "high": 8.0, "log": True}},
            "objectives": [{"metric": "val/acc", "mode": "max"}],
            "budget": 1,
        },
        "resources": {"cpu": 1, "gpu": 0, "amp": "off"},
        "output": {"cache": str(cache)},
    }


def write_study(root: Path, sizes: Sizes) -> Path:
    """The data and the study file under ``root``; returns the study's path."""
    root.mkdir(parents=True, exist_ok=True)
    data = write_data(root / f"synthetic_{sizes.side}px_{sizes.n_train}_{sizes.n_val}_{sizes.n_test}.npz", sizes)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study_raw(sizes, data.resolve(), (root / "cache").resolve()), sort_keys=False))
    return path
