"""ONNX export (kdtune.compat.onnx) and the check of an export (kdtune.onnx_latency): every registered model
round-trips, ONNX Runtime's logits are checked against PyTorch's, and a failure is one line naming the model,
the cause and the fix."""

import numpy as np
import pydantic
import pytest
import torch
from torch import nn

from kdtune.compat import onnx as compat_onnx
from kdtune.config import LatencySpec
from kdtune.data import MNIST_INFO
from kdtune.errors import KdtuneError
from kdtune.models import MODELS, build_model
from kdtune.onnx_latency import TOLERANCE, runner, session, to_onnx


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_round_trips_through_onnx(name):
    """One file serves every batch size (dynamic batch axis); ONNX Runtime computes PyTorch's logits."""
    torch.manual_seed(0)
    model = build_model(name, None, MNIST_INFO).eval()
    exported = to_onnx(name, model, (1, 28, 28))
    assert exported.file.exporter == "torchscript"  # the fast exporter handles every built-in model
    assert exported.max_abs_diff <= 1e-4
    run = runner(session(exported.file.data))
    for batch in (1, 3):
        x = torch.rand(batch, 1, 28, 28)
        with torch.no_grad():
            expected = model(x).numpy()  # (B, 10)
        got = run(x.numpy())
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.slow  # the dynamo exporter: seconds of torch.export
def test_the_dynamo_exporter_takes_over_when_the_torchscript_one_fails(monkeypatch):
    def broken(model, example):
        raise RuntimeError("gone in this torch")

    monkeypatch.setattr(compat_onnx, "_torchscript", broken)
    model = build_model("lenet5_half", None, MNIST_INFO).eval()
    exported = to_onnx("lenet5_half", model, (1, 28, 28))
    assert exported.file.exporter == "dynamo"
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(runner(session(exported.file.data))(x.numpy()), model(x).numpy(), atol=1e-4)


def test_a_model_neither_exporter_can_export_is_one_line_naming_it_the_cause_and_the_fix(monkeypatch):
    def refuses(model, example):
        raise RuntimeError("Unsupported: ONNX export of operator my_op\nsecond line of the traceback")

    monkeypatch.setattr(compat_onnx, "_torchscript", refuses)
    monkeypatch.setattr(compat_onnx, "_dynamo", refuses)
    with pytest.raises(KdtuneError) as info:
        to_onnx("trial abc_00001", build_model("mlp", {"hidden": [4]}, MNIST_INFO), (1, 28, 28))
    message = str(info.value)
    assert "\n" not in message and "second line" not in message
    assert message.startswith("model 'trial abc_00001' cannot be exported to ONNX (opset 18)")
    assert "torchscript exporter: Unsupported: ONNX export of operator my_op" in message
    assert "dynamo exporter: Unsupported" in message
    assert message.endswith("set evaluation.latency.runtime: torch to time the PyTorch model instead")


def test_an_export_that_computes_other_logits_fails_naming_the_bound():
    """A stateful forward (it scales by how often it was called) is traced once: the export's logits are
    half of what PyTorch computes on its next call."""

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.calls = nn.Linear(784, 10), 0

        def forward(self, x):
            self.calls += 1
            return self.lin(x.flatten(1)) * 10.0 * self.calls

    with pytest.raises(KdtuneError) as info:
        to_onnx("teacher", Counting(), (1, 28, 28))
    message = str(info.value)
    assert message.startswith("model 'teacher': ONNX Runtime's logits differ from PyTorch's by up to")
    assert f"({TOLERANCE:g} x max(1, max |logit|))" in message and "evaluation.latency.runtime: torch" in message


def test_the_runtime_defaults_to_onnxruntime_and_accepts_only_the_two_runtimes():
    assert LatencySpec().runtime == "onnxruntime"
    assert LatencySpec(runtime="torch").runtime == "torch"
    with pytest.raises(pydantic.ValidationError, match="'torch' or 'onnxruntime'"):
        LatencySpec(runtime="tensorrt")


def test_a_misspelled_runtime_in_a_study_file_names_its_path(tmp_path):
    from kdtune.config import load_study
    from kdtune.errors import ConfigError
    from tests.studies import base_study, write_study

    raw = base_study()
    raw.setdefault("evaluation", {})["latency"] = {"runtime": "onnx"}
    with pytest.raises(ConfigError) as info:
        load_study(write_study(tmp_path / "study.yaml", raw))
    assert "evaluation.latency.runtime" in str(info.value) and "onnxruntime" in str(info.value)
    raw["evaluation"]["latency"] = {"runtime": "torch"}
    assert load_study(write_study(tmp_path / "study.yaml", raw)).evaluation.latency.runtime == "torch"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # what the tracer warns about is what fails here
def test_an_export_that_bakes_in_the_batch_size_fails_naming_the_model():
    class Baked(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, x):
            return self.lin(x.reshape(int(x.shape[0]), 784))  # a Python int: traced as the constant 2

    with pytest.raises(KdtuneError, match="model 'trial t1' was exported to ONNX but ONNX Runtime cannot run it"):
        to_onnx("trial t1", Baked(), (1, 28, 28))
