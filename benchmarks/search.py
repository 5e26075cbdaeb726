"""``hv_gain``: does kdtune's default sampler find a better front than random search at the same budget?

A cheap synthetic objective stands in for training, shaped like the flagship study
(``studies/pareto_mnist.yaml``): the same six searched hyperparameters and three objectives. Clean
accuracy grows with the student's width and good KD settings, and falls with adversarial eps and
large penalty weights; PGD robust accuracy at eps 0.1 needs adversarial training near that eps and
gains a little from the penalties; latency grows with the width. Accuracies carry seeded noise of
0.3 points, about the run-to-run noise of a real trial.

The comparison uses the usual normalization for comparing samplers: each objective rescaled to the range
that all runs together reached (best 0 .. worst 1), reference point at the worst. kdtune's report
hypervolume (accuracies against 0, latency against the teacher's) is printed beside it: most of its volume
is reached by any reasonable student, so it barely separates samplers (see docs/performance.md).
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import statistics
from collections.abc import Callable

import numpy as np
import optuna

from benchmarks._protocol import Result
from benchmarks._setup import Bench
from kdtune.config import SearchSpec
from kdtune.pareto import hypervolume

TARGET = 0.05
MODES = ("max", "max", "min")
REFERENCE = (0.0, 0.0, 1.0)
SPACE = {
    "method.temperature": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
    "method.alpha": {"type": "float", "low": 0.0, "high": 1.0},
    "penalties.jacobian.weight": {"type": "float", "low": 1.0e-5, "high": 1.0e-1, "log": True},
    "penalties.hessian.weight": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
    "adversary.attack.eps": {"type": "float", "low": 0.0, "high": 0.2},
    "student.model.hidden.0": {"type": "int", "low": 16, "high": 256, "log": True},
}


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def synthetic(p: dict[str, float], noise: np.random.Generator) -> tuple[float, float, float]:
    """(val/acc, val/robust_acc@0.1, latency / teacher latency) of a made-up but plausible trial."""
    capacity = math.log2(p["student.model.hidden.0"] / 16) / 4  # 0 .. 1
    kd = math.exp(-math.log(p["method.temperature"] / 4) ** 2) * (0.4 + 0.6 * (1 - abs(p["method.alpha"] - 0.8)))
    eps, jac = p["adversary.attack.eps"], math.log10(p["penalties.jacobian.weight"])  # jac: -5 .. -1
    hes = math.log10(p["penalties.hessian.weight"])  # -4 .. 0
    acc = (0.84 + 0.08 * capacity + 0.03 * kd - 1.5 * eps**2
           - 0.06 * _sigmoid(3 * (jac + 2)) - 0.05 * _sigmoid(3 * (hes + 0.7)))
    robust = ((0.03 + 0.62 * _sigmoid(40 * (eps - 0.09))) * (0.7 + 0.3 * capacity)
              + 0.08 * _sigmoid(2 * (jac + 3)) + 0.04 * _sigmoid(2 * (hes + 1.5)) - 2.0 * max(0.0, eps - 0.14) ** 2)
    acc, robust = acc + noise.normal(0, 0.003), robust + noise.normal(0, 0.003)
    latency = 0.15 + 0.7 * p["student.model.hidden.0"] / 256
    return min(acc, 1.0), max(0.0, min(robust, acc)), latency


def _front(sampler: optuna.samplers.BaseSampler, n_trials: int, seed: int) -> np.ndarray:
    """The (n_trials, 3) objective values a sampler's study reached."""
    from kdtune.sweep import DefineByRun

    search = _search(n_trials)
    suggest = DefineByRun(search, {})
    noise = np.random.default_rng(seed)  # the same noise sequence for both samplers

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        suggest(trial)
        return synthetic(trial.params, noise)

    study = optuna.create_study(directions=["maximize", "maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return np.array([t.values for t in study.trials if t.values is not None])


def _run_job(job: tuple[str, int, int]) -> np.ndarray:
    """One (sampler kind, budget, seed) study, in a worker process."""
    import torch  # the GP sampler's arithmetic: one thread per worker process, two workers on two cores

    from kdtune.sweep import build_sampler

    torch.set_num_threads(1)
    kind, n_trials, seed = job
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = build_sampler(_search(n_trials), seed) if kind == "default" else optuna.samplers.RandomSampler(seed=seed)
    return _front(sampler, n_trials, seed)


def range_normalized_hv(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Hypervolume with each objective mapped to [0, 1] over [low, high] (reference: the worst corner)."""
    scaled = (values - low) / np.where(high > low, high - low, 1.0)
    return hypervolume(scaled, MODES, (0.0, 0.0, 1.0))


def _search(n_trials: int) -> SearchSpec:
    return SearchSpec.model_validate({
        "space": SPACE, "budget": n_trials,  # the default sampler
        "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "val/robust_acc@0.1", "mode": "max"},
                       {"metric": "latency/ms_b1", "mode": "min"}],
    })


def run_hv_gain(bench: Bench, log: Callable[[str], None]) -> Result:
    s = bench.settings
    log(f"  hv_gain: {s.hv_seeds} seeds x {s.hv_trials} trials, default sampler vs random search")
    jobs = [(kind, s.hv_trials, seed) for kind in ("default", "random") for seed in range(s.hv_seeds)]
    # No timing here: the studies run two at a time (the GP sampler's suggestions take ~1 s each at 50 trials).
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        fronts = list(pool.map(_run_job, jobs))
    default, random = fronts[: s.hv_seeds], fronts[s.hv_seeds :]
    everything = np.concatenate(default + random)
    low, high = everything.min(axis=0), everything.max(axis=0)
    hv_default = [range_normalized_hv(v, low, high) for v in default]
    hv_random = [range_normalized_hv(v, low, high) for v in random]
    gains = [a - b for a, b in zip(hv_default, hv_random)]
    report_hv = {name: statistics.median(hypervolume(v, MODES, REFERENCE) for v in runs)
                 for name, runs in (("default", default), ("random", random))}
    note = (f"default {statistics.median(hv_default):.3f} vs random {statistics.median(hv_random):.3f}; "
            f"report hypervolume {report_hv['default']:.3f} vs {report_hv['random']:.3f}")
    return Result("hv_gain", statistics.median(gains), TARGET, sense=">=", note=note, meaning=(
        f"hypervolume of kdtune's default sampler minus random search, {s.hv_trials} trials each on a synthetic "
        "acc / robust acc / latency objective, median over seeds; objectives rescaled to the range all runs "
        "reached, reference at the worst corner"),
        extra={"default_hv": statistics.median(hv_default), "random_hv": statistics.median(hv_random),
               "gains": gains, "report_hv_default": report_hv["default"], "report_hv_random": report_hv["random"],
               "default_sampler": _search(s.hv_trials).sampler_kind,
               "n_trials": s.hv_trials, "seeds": s.hv_seeds})
