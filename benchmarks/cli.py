"""``python -m benchmarks [--quick] [--out PATH] [--only NAME,...]``: run, print a table, write JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._protocol import PROTOCOL, Result

# harness after the rest: it times Ray's start-up; search_cost (which reuses that Ray) last
GROUPS = ("steps", "robust_eval", "latency", "hv_gain", "harness", "search_cost")
KEYS = ("harness_overhead", "kd_step", "cached_teacher_step", "jacobian_rp", "hessian", "fgsm_at", "pgd7_at",
        "robust_eval", "latency_ratio_error", "latency_width_slope", "hv_gain", "search_cost.epochs_to_95pct_hv",
        "search_cost.hv_ratio_equal_epochs")
FAIRNESS = {
    "harness_overhead": "the hand-written study does the same work as kdtune's: teacher logits once and the "
    "teacher's metrics; per trial the same KD training (same seeds, same sampled temperature/alpha), the same "
    "evaluation (clean/PGD-20/FGSM at 3 eps on val and test, Jacobian norm, in-trial latency) and the weights "
    "saved; the serial latency of teacher + students after the trials (both in eager PyTorch: the harness study "
    "sets evaluation.latency.runtime: torch, as the hand loop times; latency_width_slope reports what the ONNX "
    "runtime adds per trial). kdtune's extra work (Ray Tune actor, "
    "Optuna storage, checkpoints, MLflow, report, masking checks) is the overhead measured. Ray "
    "start-up is excluded from value (reported as ray_init_s; value_with_ray_init counts it once); the "
    "teacher is trained before timing and loaded from kdtune's cache; Ray workers run at niceness 0, the "
    "hand loop's priority (Ray's default is 15).",
    "steps": "whole epochs of kdtune's fit_student against a hand-written plain-torch loop with the same model "
    "layers, seed, batches, Adam and loss; CPU seconds of the process (single-threaded work).",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repeat counts: checks the harness runs")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.json"), help="JSON output path")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {', '.join(GROUPS)}")
    args = parser.parse_args(argv)
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in args.only if g not in GROUPS]
    if unknown:
        parser.error(f"unknown benchmark group {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    return args


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_groups(groups: list[str], bench: Any) -> tuple[list[Result], dict[str, Any]]:
    from benchmarks.checks import fast_path_checks
    from benchmarks.evaluation import run_latency, run_robust_eval
    from benchmarks.harness import run_harness
    from benchmarks.runtime import run_width_slope
    from benchmarks.search import run_hv_gain
    from benchmarks.search_cost import run_search_cost
    from benchmarks.steps import run_steps

    runners: dict[str, Callable[..., Any]] = {
        "steps": run_steps, "robust_eval": lambda b, log: [run_robust_eval(b, log)],
        "latency": lambda b, log: [run_latency(b, log), run_width_slope(b, log)], "hv_gain": lambda b, log: [run_hv_gain(b, log)],
        "harness": lambda b, log: [run_harness(b, log)], "search_cost": run_search_cost,
    }
    results: list[Result] = []
    for group in (g for g in GROUPS if g in groups):
        start = time.perf_counter()
        _log(f"{group} ...")
        results += runners[group](bench, _log)
        _log(f"{group}: {time.perf_counter() - start:.0f} s")
    return results, fast_path_checks(bench)


def _meta(quick: bool, seconds: float) -> dict[str, Any]:
    import optuna
    import ray
    import torch

    return {
        "command": "python -m benchmarks" + (" --quick" if quick else ""),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPU(s), {platform.machine()}, "
        f"{platform.system()} {platform.release()}",
        "threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
        "optuna": optuna.__version__, "quick": quick, "wall_s": round(seconds, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(results: list[Result]) -> str:
    """One row per benchmark: per-batch values, value, target, pass/fail."""
    rows = [("benchmark", "b64", "b256", "value", "target", "ok", "note")]
    for r in sorted(results, key=lambda r: KEYS.index(r.name) if r.name in KEYS else len(KEYS)):
        rows.append((r.name, _fmt(r.per_batch.get("b64")), _fmt(r.per_batch.get("b256")), _fmt(r.value),
                     f"{r.sense} {r.target:g}", "yes" if r.ok else "NO", r.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if math.isfinite(v) else str(v)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    from benchmarks._setup import Settings, load_bench

    torch.set_num_threads(1)
    settings = Settings.tiny() if args.quick else Settings.full()
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="kdtune-bench-") as tmp:
            _log(f"setting up (data, trained teacher) in {tmp}")
            bench = load_bench(settings, Path(tmp))
            results, checks = _run_groups(args.only, bench)
    finally:
        _shutdown_ray()
    seconds = time.perf_counter() - start
    protocol = PROTOCOL.format(repeats=f"{settings.step_repeats} (steps) / {settings.eval_repeats} (robust_eval) / "
                               f"{settings.latency_repeats} (latency) / {settings.harness_repeats} (harness)")
    payload = {"meta": _meta(args.quick, seconds), "protocol": protocol, "fairness": FAIRNESS, "checks": checks,
               **{r.name: r.to_json() for r in results}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(table(results))
    print(f"\nprotocol: {protocol}")
    for name, text in FAIRNESS.items():
        print(f"fairness ({name}): {text}")
    print(f"checks: {json.dumps(checks)}")
    print(f"{sum(r.ok for r in results)}/{len(results)} within target; {seconds:.0f} s; written to {args.out}")
    return 0


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
