"""``latency_width_slope``: whether latency sees a student's width. Batch-1 latency of a width-256 MLP student
over a width-16 one, in ONNX Runtime (kdtune's default runtime) and in eager PyTorch, side by side.

Eager PyTorch at batch 1 is mostly framework overhead: 16 times the FLOPs moved it 1.5-1.6x, so a
chance-level student could sit on the front for being a few ns faster. The ratio is what a front reads.
Both runtimes time the same two models under kdtune's default protocol (``LatencySpec``: 50 warm-up calls,
10 interleaved repeats of 20 calls, the fastest call), in alternating order round by round; the per-trial
cost of the ONNX runtime (export, check, session, the protocol at batch 1 and 256) is reported beside it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from benchmarks._protocol import Result, interleaved
from benchmarks._setup import SEED, Bench
from kdtune.config import LatencySpec
from kdtune.evaluate import model_costs
from kdtune.latency import measure_latency
from kdtune.models import build_model
from kdtune.onnx_latency import to_onnx

WIDTHS = (16, 256)
TARGET = 2.0  # ONNX Runtime must see at least this much of the 16x FLOPs


def run_width_slope(bench: Bench, log: Callable[[str], None]) -> Result:
    """Median over rounds of latency(width 256) / latency(width 16) at batch 1 under ONNX Runtime; the
    eager-PyTorch ratio of the same rounds beside it."""
    torch.manual_seed(SEED)
    shape = bench.data.input_shape
    models = {w: build_model("mlp", {"hidden": [w]}, bench.data.info).eval() for w in WIDTHS}
    ratios: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
    ms: dict[str, list[tuple[float, float]]] = {"onnxruntime": [], "torch": []}
    export_s: list[float] = []

    def side(runtime: str) -> Callable[[], float]:
        def measure() -> float:
            spec = LatencySpec(runtime=runtime, batch_sizes=[1])
            start = time.perf_counter()
            if runtime == "onnxruntime":  # exported anew each round, as every trial exports its student
                timed = {w: to_onnx(f"mlp {w}", m, shape) for w, m in models.items()}
                export_s.append((time.perf_counter() - start) / len(models))
            out = measure_latency(timed if runtime == "onnxruntime" else models, shape, spec)
            narrow, wide = (out[w]["latency/ms_b1"] for w in WIDTHS)
            ratios[runtime].append(wide / narrow)
            ms[runtime].append((narrow, wide))
            return time.perf_counter() - start
        return measure

    log(f"  latency_width_slope: {bench.settings.latency_repeats} rounds, mlp {WIDTHS[1]} / mlp {WIDTHS[0]} at batch 1")
    to_onnx("warm-up", models[WIDTHS[0]], shape)  # a process's first export imports onnx: not a trial's cost
    interleaved({"onnxruntime": side("onnxruntime"), "torch": side("torch")}, repeats=bench.settings.latency_repeats,
                warmup=0)  # the protocol warms up each model itself
    ort, eager = statistics.median(ratios["onnxruntime"]), statistics.median(ratios["torch"])
    flops = model_costs(models[WIDTHS[1]], shape)["model/flops"] / model_costs(models[WIDTHS[0]], shape)["model/flops"]
    extra = {"torch_ratio": eager, "flops_ratio": flops, "onnxruntime_rounds": ratios["onnxruntime"],
             "torch_rounds": ratios["torch"], "export_check_s_per_model": statistics.median(export_s),
             **{f"{rt}_ms_b1": {f"mlp_{w}": statistics.median(r[i] for r in ms[rt]) for i, w in enumerate(WIDTHS)}
                for rt in ms},
             "trial_latency_s": _trial_cost(bench)}
    note = (f"eager torch {eager:.2f}; FLOPs {flops:.1f}x; export+check {1000 * extra['export_check_s_per_model']:.0f} ms"
            f"/model; in-trial latency {extra['trial_latency_s']['onnxruntime']:.2f} s vs "
            f"{extra['trial_latency_s']['torch']:.2f} s eager")
    return Result("latency_width_slope", ort, TARGET, sense=">=", extra=extra, note=note, meaning=(
        f"batch-1 latency of an MLP student of width {WIDTHS[1]} / width {WIDTHS[0]} in ONNX Runtime (the default "
        "runtime), median over interleaved rounds; torch_ratio: the same in eager PyTorch, same rounds; "
        "trial_latency_s: what a trial's in-trial latency costs under each runtime (default LatencySpec, "
        "batch 1 and 256, export and check included)"))


def _trial_cost(bench: Bench) -> dict[str, float]:
    """Seconds of a trial's in-trial latency of kdtune's benchmark student under each default protocol."""
    student = bench.student().eval()
    out = {}
    for runtime in ("onnxruntime", "torch"):
        start = time.perf_counter()
        measure_latency({"student": student}, bench.data.input_shape, LatencySpec(runtime=runtime))
        out[runtime] = time.perf_counter() - start
    return out
