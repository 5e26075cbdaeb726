"""Evaluation benchmarks: the cost of robust evaluation relative to a trial, and whether kdtune's latency
measurement agrees with a hand-written one."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch import nn

from benchmarks import hand
from benchmarks._protocol import Result, cpu_clock, cv, interleaved, median_ratio
from benchmarks._setup import SEED, Bench
from kdtune.attacks import pgd
from kdtune.config import LatencySpec
from kdtune.evaluate import correct, robust_accuracy
from kdtune.latency import measure_latency
from kdtune.methods import MethodContext, build_method
from kdtune.student import run_student
from kdtune.train import fit_student

EPS = (0.05, 0.1, 0.2)
N_IMAGES = 1000
PGD_STEPS = 20
CV_TARGET = 0.02


def _pgd_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """kdtune's PGD-20 robust accuracy at every eps: the numerator's workload."""
    start = cpu_clock()
    right = correct(model, x, y)  # once, as kdtune's evaluation does
    for eps in EPS:
        robust_accuracy(model, x, y, lambda m, a, b, e=eps: pgd(m, a, b, eps=e, steps=PGD_STEPS), right=right)
    return cpu_clock() - start


def _hand_pgd_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    gen = torch.Generator().manual_seed(SEED)
    start = cpu_clock()
    right = hand.right_mask(model, x, y)
    for eps in EPS:
        hand.attacked_accuracy(model, x, y, lambda m, a, b, e=eps: hand.pgd(m, a, b, e, PGD_STEPS, gen), right)
    return cpu_clock() - start


def run_robust_eval(bench: Bench, log: Callable[[str], None]) -> Result:
    """PGD-20 at three eps on 1,000 test images / one 10-epoch student trial as a kdtune trial runs it."""
    cfg, ctx = bench.cfg, MethodContext(bench.data, bench.teacher, bench.teacher_logits, bench.cfg.student,
                                        bench.cfg.seed, bench.root / "cache")
    x, y = bench.data.test.x[:N_IMAGES], bench.data.test.y[:N_IMAGES]
    trained = run_student(cfg, ctx).student
    hand_model = bench.hand_student()
    hand_model.load_state_dict(trained.state_dict())

    def trial() -> float:  # what run_trial does in its Ray worker: train + evaluate, then in-trial latency
        start = cpu_clock()
        run = run_student(cfg, ctx)
        measure_latency({"student": run.student}, bench.data.input_shape, cfg.evaluation.latency)
        return cpu_clock() - start

    def train_only() -> float:
        student, distiller = bench.student(), build_method(cfg.method.name, cfg.method.params, ctx)
        start = cpu_clock()
        fit_student(student, bench.data, cfg.student, distiller=distiller, seed=cfg.seed)
        return cpu_clock() - start

    log(f"  robust_eval: {bench.settings.eval_repeats} rounds of PGD / trial / training")
    t = interleaved({"pgd": lambda: _pgd_eval(trained, x, y), "hand_pgd": lambda: _hand_pgd_eval(hand_model, x, y),
                     "trial": trial, "train": train_only}, repeats=bench.settings.eval_repeats)
    vs_training = median_ratio(t["pgd"], t["train"])
    meaning = (f"kdtune's PGD-{PGD_STEPS} at eps {', '.join(map(str, EPS))} on {len(y)} test images / one "
               f"{cfg.student.epochs}-epoch student trial as run_trial runs it (KD training + kdtune's default "
               "evaluation + in-trial latency)")
    extra = {"vs_training_only": vs_training, "kdtune_pgd_vs_hand_pgd": median_ratio(t["pgd"], t["hand_pgd"]),
             "cpu_s": {k: statistics.median(v) for k, v in t.items()}}
    return Result("robust_eval", median_ratio(t["pgd"], t["trial"]), 0.35, meaning=meaning, extra=extra,
                  note=f"vs training alone {vs_training:.2f}")


def run_latency(bench: Bench, log: Callable[[str], None]) -> Result:
    """kdtune's teacher/student latency ratio against a hand-measured one, same models, same protocol (eager
    PyTorch, as the hand-written timer; ONNX Runtime: ``benchmarks.runtime``)."""
    spec = LatencySpec(runtime="torch")
    models = {"teacher": bench.teacher, "student": bench.student().eval()}
    ratios: dict[str, dict[int, list[float]]] = {"kdtune": {b: [] for b in spec.batch_sizes},
                                                 "hand": {b: [] for b in spec.batch_sizes}}

    def kdtune_side() -> float:
        ms = measure_latency(models, bench.data.input_shape, spec)
        for b in spec.batch_sizes:
            ratios["kdtune"][b].append(ms["teacher"][f"latency/ms_b{b}"] / ms["student"][f"latency/ms_b{b}"])
        return 0.0

    def hand_side() -> float:
        ms = hand.latency_ms(models, bench.data.input_shape, batch_sizes=spec.batch_sizes, warmup=spec.warmup,
                             repeats=spec.repeats, n_calls=spec.n_calls, statistic=spec.statistic)
        for b in spec.batch_sizes:
            ratios["hand"][b].append(ms["teacher"][b] / ms["student"][b])
        return 0.0

    log(f"  latency: {bench.settings.latency_repeats} rounds, kdtune's measure_latency vs a hand-written timer")
    interleaved({"kdtune": kdtune_side, "hand": hand_side}, repeats=bench.settings.latency_repeats, warmup=0)
    per_batch, extra = {}, {}
    for b in spec.batch_sizes:
        k, h = ratios["kdtune"][b], ratios["hand"][b]
        per_batch[f"b{b}"] = statistics.median(abs(a - c) / c for a, c in zip(k, h))
        extra[f"cv_b{b}"] = cv(k)
        extra[f"hand_cv_b{b}"] = cv(h)  # the host's own noise: the hand-written timer's ratio over the same rounds
        extra[f"kdtune_ratio_b{b}"], extra[f"hand_ratio_b{b}"] = statistics.median(k), statistics.median(h)
    extra["cv"] = max(extra[f"cv_b{b}"] for b in spec.batch_sizes)
    extra["hand_cv"] = max(extra[f"hand_cv_b{b}"] for b in spec.batch_sizes)
    extra["cv_target"] = CV_TARGET
    extra["statistic"] = spec.statistic  # of the per-call times, on both sides
    return Result("latency_ratio_error", max(per_batch.values()), 0.05, per_batch=per_batch, extra=extra,
                  conditions={"cv_ok": extra["cv"] <= CV_TARGET},
                  note=(f"within-run CV {extra['cv']:.1%} (target <= {CV_TARGET:.0%}; "
                        f"hand-written {extra['hand_cv']:.1%})"), meaning=(
        "|kdtune's teacher/student latency ratio - a hand-measured ratio| / hand ratio (median over rounds; "
        "value: worse batch size); cv: within-run coefficient of variation of kdtune's ratio (hand_cv: of the "
        "hand-written timer's, the host's own noise in the same rounds)"))
