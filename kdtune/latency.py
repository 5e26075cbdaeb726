"""The latency protocol: milliseconds per call of several models side by side, in ONNX Runtime or PyTorch.

One thread; ``spec.warmup`` warm-up calls per model and batch size; then ``spec.repeats`` repeats in which
every model is timed in turn (interleaved, so drift hits all alike), each timing ``spec.n_calls`` calls
per batch size. Figure: the fastest of all timed calls or their median (``spec.statistic``); spread:
max_r s_r - min_r s_r, s_r that statistic over repeat r's calls (``summarize``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from kdtune import metrics
from kdtune.onnx_latency import BoundCall, OnnxModel, session, to_onnx

if TYPE_CHECKING:
    from kdtune.spec import LatencySpec

Call = Callable[[], object]  # one call of a model on its input


def measure_latency(
    models: Mapping[str, nn.Module | OnnxModel], input_shape: tuple[int, ...], spec: LatencySpec, *,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each model at each batch size, and their spread, measured side by side.

    ``runtime: onnxruntime``: each module is exported and checked first (``to_onnx``; an ``OnnxModel``, already
    exported, is taken as it is) and timed in ONNX Runtime on the CPU, whatever ``device``; its
    ``model/onnx_max_abs_diff`` comes along. ``runtime: torch``: the module itself on ``device``, in inference
    mode (each call waited for on a GPU). Returns ``{model: {"latency/ms_b1": ms, "latency/spread_ms_b1": ms,
    ...}}``.
    """
    calls, checks = (_onnx_calls if spec.runtime == "onnxruntime" else _torch_calls)(models, input_shape, spec, device)
    cuda = spec.runtime == "torch" and torch.device(device).type == "cuda"
    samples: dict[str, dict[int, list[list[float]]]] = {m: {b: [] for b in per} for m, per in calls.items()}
    with single_thread(), torch.inference_mode():
        for per in calls.values():
            for call in per.values():
                for _ in range(spec.warmup):
                    call()
        for _ in range(spec.repeats):
            for name, per in calls.items():
                for b, call in per.items():
                    samples[name][b].append(_time_calls(call, spec.n_calls, cuda=cuda))
    out = {name: dict(checks.get(name, {})) for name in samples}
    for name, per in samples.items():
        for b, repeats in per.items():
            out[name][metrics.latency(b)], out[name][metrics.latency_spread(b)] = summarize(repeats, spec.statistic)
    return out


def summarize(repeats: Sequence[Sequence[float]], statistic: str) -> tuple[float, float]:
    """(figure, spread) of per-call times grouped by repeat: the statistic (``min`` or ``median``) of all
    calls, and max_r s_r - min_r s_r with s_r the statistic of repeat r's calls."""
    pick = min if statistic == "min" else statistics.median
    per_repeat = [pick(calls) for calls in repeats]
    return pick([t for calls in repeats for t in calls]), max(per_repeat) - min(per_repeat)


def _torch_calls(models: Mapping[str, nn.Module | OnnxModel], input_shape: tuple[int, ...], spec: LatencySpec,
                 device: torch.device | str) -> tuple[dict[str, dict[int, Call]], dict[str, dict[str, float]]]:
    inputs = {b: torch.rand(b, *input_shape, device=device) for b in spec.batch_sizes}
    exported = [name for name, model in models.items() if isinstance(model, OnnxModel)]
    if exported:
        raise TypeError(f"runtime torch times PyTorch modules; {exported[0]} is an ONNX model")
    return {name: {b: partial(model.eval(), x) for b, x in inputs.items()} for name, model in models.items()}, {}


def _onnx_calls(models: Mapping[str, nn.Module | OnnxModel], input_shape: tuple[int, ...], spec: LatencySpec,
                device: torch.device | str) -> tuple[dict[str, dict[int, Call]], dict[str, dict[str, float]]]:
    onnx = {name: m if isinstance(m, OnnxModel) else to_onnx(name, m, input_shape) for name, m in models.items()}
    inputs = {b: torch.rand(b, *input_shape).numpy() for b in spec.batch_sizes}  # float32, on the CPU
    sessions = {name: session(m.file.data) for name, m in onnx.items()}
    calls = {name: {b: BoundCall(sess, x) for b, x in inputs.items()} for name, sess in sessions.items()}
    return calls, {name: m.metrics for name, m in onnx.items()}


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op thread (the stable timing protocol), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_calls(call: Call, n_calls: int, *, cuda: bool) -> list[float]:
    """Milliseconds of each of ``n_calls`` back-to-back calls (on a GPU, each one waited for)."""
    times = []
    for _ in range(n_calls):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return times
