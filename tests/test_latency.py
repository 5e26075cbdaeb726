"""kdtune.latency: the timing protocol (warm-up, interleaved repeats, the statistic and its spread) in both
runtimes. No timed assertions: the clock is scripted where a figure is checked."""

import pytest
import torch
from torch import nn

from kdtune import latency as latency_module
from kdtune.config import LatencySpec
from kdtune.data import MNIST_INFO
from kdtune.latency import measure_latency, summarize
from kdtune.models import build_model

TORCH = {"runtime": "torch"}


def test_latency_follows_the_protocol():
    """Every model gets `warmup` calls per batch size, then repeats x n_calls timed calls per batch size."""
    calls: dict[str, list[int]] = {"a": [], "b": []}

    class Counting(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.lin = name, nn.Linear(784, 10)

        def forward(self, x):
            calls[self.name].append(x.shape[0])
            return self.lin(x.flatten(1))

    spec = LatencySpec(batch_sizes=[1, 8], warmup=7, repeats=3, n_calls=4, **TORCH)
    threads = torch.get_num_threads()
    out = measure_latency({"a": Counting("a"), "b": Counting("b")}, (1, 28, 28), spec)
    assert torch.get_num_threads() == threads  # the single-thread protocol restores the setting
    for name in ("a", "b"):
        assert calls[name].count(1) == calls[name].count(8) == 7 + 3 * 4
        assert set(out[name]) == {"latency/ms_b1", "latency/ms_b8", "latency/spread_ms_b1", "latency/spread_ms_b8"}
        assert all(v > 0 for k, v in out[name].items() if "spread" not in k)


class Scripted(nn.Module):
    """Each call takes the next of ``seconds`` on the patched clock."""

    def __init__(self, seconds, clock):
        super().__init__()
        self.seconds, self.clock = iter(seconds), clock

    def forward(self, x):
        self.clock[0] += next(self.seconds)
        return x


def test_latency_is_the_fastest_timed_call_or_their_median_and_its_spread_spans_the_repeats(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: clock[0])
    calls = [9.0, 0.004, 0.001, 0.003, 0.002, 0.010, 0.005]  # 1 warm-up call (not timed), then 2 x 3 timed
    spec = LatencySpec(batch_sizes=[1], warmup=1, repeats=2, n_calls=3, **TORCH)
    assert spec.statistic == "min"  # the default
    fastest = measure_latency({"m": Scripted(calls, clock)}, (1,), spec)["m"]
    median = measure_latency({"m": Scripted(calls, clock)}, (1,), spec.model_copy(update={"statistic": "median"}))["m"]
    # repeats [4, 1, 3] and [2, 10, 5] ms: fastest 1 and 2 -> spread 1; medians 3 and 5 -> spread 2
    assert fastest["latency/ms_b1"] == pytest.approx(1.0) and fastest["latency/spread_ms_b1"] == pytest.approx(1.0)
    assert median["latency/ms_b1"] == pytest.approx(3.5) and median["latency/spread_ms_b1"] == pytest.approx(2.0)


@pytest.mark.parametrize("statistic,expected", [("min", (1.0, 4.0)), ("median", (5.0, 3.0))])
def test_the_spread_is_max_minus_min_of_the_per_repeat_statistic(statistic, expected):
    repeats = [[3.0, 1.0, 4.0], [5.0, 9.0, 3.0], [6.0, 5.0, 8.0]]
    # per repeat: min 1, 3, 5 (spread 4); median 3, 5, 6 (spread 3); over all nine calls: min 1, median 5
    assert summarize(repeats, statistic) == expected
    assert summarize([[2.0, 7.0]], statistic)[1] == 0.0  # one repeat: nothing to spread over


def test_repeats_are_interleaved_between_models():
    order = []

    class Tag(nn.Module):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def forward(self, x):
            order.append(self.tag)
            return x

    spec = LatencySpec(batch_sizes=[1], warmup=1, repeats=2, n_calls=1, **TORCH)
    measure_latency({"a": Tag("a"), "b": Tag("b")}, (1,), spec)
    assert order[2:] == ["a", "b", "a", "b"]  # after warm-up: a, b in each repeat


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_both_runtimes_give_positive_latencies_and_spreads_for_every_model(runtime):
    torch.manual_seed(0)
    models = {w: build_model("mlp", {"hidden": [w]}, MNIST_INFO) for w in ("16", "256")}
    spec = LatencySpec(runtime=runtime, batch_sizes=[1, 4], warmup=2, repeats=3, n_calls=3)
    out = measure_latency(models, (1, 28, 28), spec)
    for name in models:
        for b in (1, 4):
            assert out[name][f"latency/ms_b{b}"] > 0 and out[name][f"latency/spread_ms_b{b}"] >= 0
        # ONNX Runtime's logits were checked against PyTorch's (and only then)
        assert ("model/onnx_max_abs_diff" in out[name]) == (runtime == "onnxruntime")
    assert all(v >= 0 for per in out.values() for v in per.values())
    # the spread is 0 only if every repeat gave the same figure: with 3 repeats x 2 models x 2 batches, not all
    assert any(per[f"latency/spread_ms_b{b}"] > 0 for per in out.values() for b in (1, 4))


def test_onnxruntime_times_on_the_cpu_whatever_the_device_and_leaves_the_model_there():
    model = build_model("mlp", {"hidden": [8]}, MNIST_INFO)
    out = measure_latency({"m": model}, (1, 28, 28), LatencySpec(batch_sizes=[1], warmup=1, repeats=2, n_calls=2),
                          device="meta")  # a device nothing could run on: ONNX Runtime never uses it
    assert out["m"]["latency/ms_b1"] > 0 and next(model.parameters()).device.type == "cpu"


def test_an_already_exported_model_is_timed_as_it_is():
    from kdtune.onnx_latency import to_onnx

    model = build_model("mlp", {"hidden": [8]}, MNIST_INFO)
    exported = to_onnx("m", model, (1, 28, 28))
    spec = LatencySpec(batch_sizes=[1], warmup=1, repeats=2, n_calls=2)
    out = measure_latency({"m": exported}, (1, 28, 28), spec)
    assert out["m"]["model/onnx_max_abs_diff"] == exported.max_abs_diff and out["m"]["latency/ms_b1"] > 0
    with pytest.raises(TypeError, match="ONNX model"):
        measure_latency({"m": exported}, (1, 28, 28), spec.model_copy(update={"runtime": "torch"}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_a_trial_on_a_gpu_times_its_student_in_either_runtime_and_keeps_it_there(runtime):
    model = build_model("mlp", {"hidden": [8]}, MNIST_INFO).cuda()
    spec = LatencySpec(runtime=runtime, batch_sizes=[1, 4], warmup=2, repeats=2, n_calls=2)
    out = measure_latency({"m": model}, (1, 28, 28), spec, device="cuda")["m"]
    assert out["latency/ms_b1"] > 0 and out["latency/spread_ms_b4"] >= 0
    assert next(model.parameters()).is_cuda  # ONNX export works on a CPU copy
    assert ("model/onnx_max_abs_diff" in out) == (runtime == "onnxruntime")
