"""kdtune.student: one configuration end to end reports val metrics from the val split, test from test."""

from __future__ import annotations

import torch

from kdtune.config import validate_study
from kdtune.data import Dataset, Split
from kdtune.methods import MethodContext
from kdtune.student import run_student
from tests.studies import base_study

# Shares of class 0 in each split. Every training label is 0, so the student learns to predict 0 everywhere
# and scores exactly these shares: its accuracy names the split it was measured on.
ZERO_SHARE = {"train": 1.0, "val": 0.75, "test": 0.25}


def _split(n: int, zero_share: float, seed: int) -> Split:
    """``n`` noise images (1, 2, 2): the first ``zero_share * n`` labelled 0, the others 1."""
    x = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    return Split(x, (torch.arange(n) >= int(zero_share * n)).long())


def test_run_student_reports_val_metrics_from_val_and_test_metrics_from_test(tmp_path):
    sizes = {"train": 64, "val": 20, "test": 12}
    splits = {k: _split(n, ZERO_SHARE[k], seed) for seed, (k, n) in enumerate(sizes.items())}
    data = Dataset("splits", **splits, n_classes=2, input_shape=(1, 2, 2), mean=(0.5,), std=(0.25,))
    raw = base_study(
        student={"model": {"name": "mlp", "hidden": [4]}, "epochs": 5, "batch_size": 16, "lr": 0.05},
        method={"name": "ce"},
        evaluation={"eps": [0.1], "pgd_steps": 2, "n_jacobian": 4},
    )
    cfg = validate_study(raw, source="test")
    ctx = MethodContext(data, None, None, cfg.student, cfg.seed, tmp_path)
    run = run_student(cfg, ctx)
    assert run.history[-1]["val/acc"] == ZERO_SHARE["val"]  # it predicts 0 for every input by now
    metrics = run.metrics
    assert metrics["val/acc"] == ZERO_SHARE["val"] and metrics["test/acc"] == ZERO_SHARE["test"]
    for split in ("val", "test"):
        for kind in ("robust_acc", "fgsm_acc"):
            assert metrics[f"{split}/{kind}@0.1"] == ZERO_SHARE[split]  # a margin no eps=0.1 attack crosses
