"""``search_cost``: the flagship Pareto study searched with ``fifo`` and with ``moasha`` at the same budget of
trial-epochs, side by side in one run, over several seeds.

Each seed is one replicate: ``studies/pareto_mnist.yaml`` with that seed (teacher, sampler, initialisation),
shortened (``Settings.cost_epochs`` epochs per trial, one evaluation seed, no ablation), run end to end by
kdtune (Ray Tune, Optuna, MLflow, report) once per scheduler, which of the two goes first alternating with the
seed. ``fifo`` runs ``Settings.cost_trials`` trials: its trial-epochs are the budget. ``moasha`` is given
``MOASHA_TRIALS_PER_FIFO`` times as many trials (it stops most early, so it tries more configurations), and
further sweeps of the same study while it has spent less than fifo's budget; it is judged on the trials that
finished within that budget: the trials in the order they finished, each charged the epochs it trained
(``kdtune.search_cost``).

The hypervolume of a run is over its complete, feasible trials (the study's ``val/acc >= 0.85``), each
objective rescaled to the range all runs of the benchmark reached (best 0 .. worst 1) with the reference at
the worst corner, as ``hv_gain`` does: kdtune's report hypervolume (accuracies against 0, latency against the
teacher's) is reached mostly by any reasonable student, so 95% of it says little.

- ``search_cost.epochs_to_95pct_hv``: the share of fifo's trial-epochs moasha spent before its hypervolume
  reached 95% of fifo's final one; median over seeds (inf where it never did). Target <= 0.40.
- ``search_cost.hv_ratio_equal_epochs``: moasha's hypervolume at fifo's total trial-epochs over fifo's final
  one; median over seeds. Target >= 1.0.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks._protocol import Result
from benchmarks._setup import Bench

STUDY = Path(__file__).resolve().parents[1] / "studies" / "pareto_mnist.yaml"
MOASHA_TRIALS_PER_FIFO = 4
MAX_TOP_UPS = 3  # further sweeps of moasha's study while it has spent less than fifo's budget
SCHEDULERS = ("fifo", "moasha")


def study_raw(bench: Bench, seed: int, scheduler: str, root: Path) -> dict[str, Any]:
    """The pareto study as this benchmark runs it, for one seed and scheduler."""
    s = bench.settings
    raw = yaml.safe_load(STUDY.read_text())
    n_trials = s.cost_trials * (MOASHA_TRIALS_PER_FIFO if scheduler == "moasha" else 1)
    raw.update(name=f"cost_{scheduler}_{seed}", seed=seed)
    raw["dataset"] = {"name": "mnist_5k", **s.dataset}
    raw["teacher"]["epochs"] = s.teacher_epochs
    raw["student"]["epochs"] = s.cost_epochs
    raw["evaluation"].update(seeds=1, ablation=False)
    if not s.cost_constrained:
        raw["search"].pop("constraints")
    raw["search"].update(budget=n_trials, scheduler={"name": scheduler} if scheduler == "fifo" else
                         {"name": "moasha", "min_epochs": 1, "reduction_factor": 3})
    raw["tracking"] = {"uri": f"sqlite:///{root / 'mlflow.db'}"}
    raw["output"] = {"cache": str(bench.root / "cache")}  # the teachers, shared by both schedulers of a seed
    return raw


def _run(bench: Bench, seed: int, scheduler: str, log: Callable[[str], None], *,
         at_least: float = 0.0) -> dict[str, Any]:
    """One study: its records (in trial order), the seconds it took and its feasibility mask. While its trials
    have spent fewer than ``at_least`` trial-epochs, the study runs again with more trials: kdtune studies
    accumulate, so the sweeps add up to one search (``sweep_s`` leaves the gaps between them out)."""
    from kdtune.config import load_study, with_overrides
    from kdtune.feasibility import Feasibility
    from kdtune.study import run_study

    root = bench.root / f"cost-{scheduler}-{seed}"
    root.mkdir(parents=True)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study_raw(bench, seed, scheduler, root)))
    cfg = load_study(path)
    start = time.perf_counter()
    outcome = run_study(cfg, workdir=root, echo=lambda line: None)
    for _ in range(MAX_TOP_UPS):
        spent = sum(r.epochs or 0 for r in outcome.records)
        if spent >= at_least:
            break
        more = math.ceil((at_least - spent) / max(1.0, spent / len(outcome.records))) + 1  # at its pace so far
        outcome = run_study(with_overrides(cfg, {"search.budget": more}), workdir=root, echo=lambda line: None)
    seconds = time.perf_counter() - start
    feasible = Feasibility(tuple(cfg.search.constraints)).mask(outcome.records)
    log(f"  search_cost seed {seed} {scheduler}: {len(outcome.records)} trials, "
        f"{sum(r.epochs or 0 for r in outcome.records)} trial-epochs, {seconds:.0f} s")
    return {"records": outcome.records, "feasible": feasible, "seconds": seconds,
            "objectives": list(cfg.search.objectives)}


def _values(run: dict[str, Any], positions: Sequence[int] | None = None) -> np.ndarray:
    """(k, m): the objectives of the run's complete, feasible trials (among ``positions``: all by default)."""
    records, feasible, objectives = run["records"], run["feasible"], run["objectives"]
    rows = [v for i in (range(len(records)) if positions is None else positions)
            if feasible[i] and (v := records[i].objective_values(objectives)) is not None]
    return np.array(rows, dtype=float).reshape(len(rows), len(objectives))


def _curve(run: dict[str, Any], low: np.ndarray, high: np.ndarray):
    """The run's hypervolume against its cumulative trial-epochs, objectives rescaled to [low, high]."""
    from kdtune.pareto import hypervolume
    from kdtune.search_cost import cost_curve

    modes = [o.mode for o in run["objectives"]]
    reference = [0.0 if m == "max" else 1.0 for m in modes]  # the worst corner of the rescaled box
    scale = np.where(high > low, high - low, 1.0)

    def hv_of(positions: Sequence[int]) -> float:
        rows = _values(run, positions)
        return hypervolume((rows - low) / scale, modes, reference) if len(rows) else 0.0

    return cost_curve(run["records"], hv_of)


def run_search_cost(bench: Bench, log: Callable[[str], None]) -> list[Result]:
    from kdtune.sweep import init_ray

    s = bench.settings
    log(f"  search_cost: {s.cost_seeds} seeds x (fifo {s.cost_trials} trials, moasha "
        f"{s.cost_trials * MOASHA_TRIALS_PER_FIFO}) of {s.cost_epochs} epochs")
    init_ray("local", echo=log)
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    budget = s.cost_trials * s.cost_epochs  # fifo's trial-epochs (its trials train every epoch)
    for seed in range(s.cost_seeds):
        for scheduler in SCHEDULERS if seed % 2 == 0 else reversed(SCHEDULERS):
            runs[scheduler, seed] = _run(bench, seed, scheduler, log, at_least=budget if scheduler == "moasha" else 0)
    everything = np.concatenate([_values(run) for run in runs.values()])
    if not len(everything):
        raise RuntimeError("search_cost: no run has a complete, feasible trial; nothing to compare")
    low, high = everything.min(axis=0), everything.max(axis=0)
    shares, ratios, per_seed = [], [], []
    for seed in range(s.cost_seeds):
        fifo, moasha = (_curve(runs[k, seed], low, high) for k in SCHEDULERS)
        budget, final = float(fifo.epochs[-1]), float(fifo.hypervolume[-1])
        reached = moasha.epochs_to_reach(0.95 * final)
        shares.append(reached / budget if reached is not None else math.inf)
        ratios.append(moasha.at_epochs(budget) / final if final > 0 else math.nan)
        per_seed.append({"seed": seed, "budget_epochs": budget, "fifo_hv": final,
                         "moasha_hv_at_budget": moasha.at_epochs(budget), "moasha_epochs": float(moasha.epochs[-1]),
                         "moasha_trials": len(moasha.order), "epochs_to_95pct_hv": shares[-1],
                         "fifo_s": runs["fifo", seed]["seconds"], "moasha_s": runs["moasha", seed]["seconds"]})
    share, ratio = statistics.median(shares), statistics.median(ratios)
    common = {"seeds": s.cost_seeds, "fifo_trials": s.cost_trials, "epochs": s.cost_epochs,
              "moasha_trials": s.cost_trials * MOASHA_TRIALS_PER_FIFO, "per_seed": per_seed}
    return [
        Result("search_cost.epochs_to_95pct_hv", share, 0.40, sense="<=", extra={**common, "shares": shares},
               note=f"per seed {' / '.join(f'{x:.2f}' for x in shares)}", meaning=(
                   "share of fifo's total trial-epochs that moasha spent before its hypervolume reached 95% of "
                   "fifo's final hypervolume (pareto study, range-normalized objectives); median over seeds")),
        Result("search_cost.hv_ratio_equal_epochs", ratio, 1.0, sense=">=", extra={**common, "ratios": ratios},
               note=f"per seed {' / '.join(f'{x:.2f}' for x in ratios)}", meaning=(
                   "moasha's hypervolume over fifo's at fifo's total trial-epochs (moasha's trials that finished "
                   "within that budget); median over seeds")),
    ]
