"""Fast paths the benchmarks rely on, checked rather than assumed (each is a yes/no, not a timing)."""

from __future__ import annotations

from typing import Any

import torch

from benchmarks._setup import Bench
from kdtune.config import TrainSpec
from kdtune.data import Split
from kdtune.evaluate import accuracy
from kdtune.methods import MethodContext, build_method
from kdtune.train import fit_student


def fast_path_checks(bench: Bench) -> dict[str, Any]:
    """Teacher never run while a hinton student trains (logits cached per study); clean accuracy scored
    in inference mode; training batches are index tensors into the in-memory split."""
    ctx = MethodContext(bench.data, bench.teacher, bench.teacher_logits, bench.cfg.student, bench.cfg.seed,
                        bench.root / "cache")
    teacher_calls: list[int] = []
    handle = bench.teacher.register_forward_hook(lambda *_: teacher_calls.append(1))
    try:
        spec = TrainSpec.model_validate({"model": {"name": "seed000_student"}, "epochs": 1, "batch_size": 64})
        student = bench.student()
        fit_student(student, bench.data, spec, distiller=build_method("hinton", {}, ctx), seed=bench.cfg.seed)
    finally:
        handle.remove()
    modes: list[bool] = []
    handle = student.register_forward_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    try:
        accuracy(student, bench.data.val.x, bench.data.val.y)
    finally:
        handle.remove()
    batch = next(iter(bench.data.train.index_batches(64)))
    return {
        "teacher_forward_calls_during_kd_training": len(teacher_calls),
        "clean_accuracy_in_inference_mode": bool(modes) and all(modes),
        "batches_index_in_memory_tensors": isinstance(bench.data.train.x, torch.Tensor)
        and isinstance(batch, torch.Tensor) and isinstance(bench.data.train, Split),
    }
