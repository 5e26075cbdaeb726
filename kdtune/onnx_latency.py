"""Models for ``evaluation.latency.runtime: onnxruntime``: exported, checked against PyTorch, run in ONNX Runtime.

``to_onnx`` exports a model (``kdtune.compat.onnx``), runs the file in ONNX Runtime on a fixed input and
compares its logits with PyTorch's: max_i,k |onnx_ik - torch_ik| must stay within
``TOLERANCE`` x max(1, max_ik |torch_ik|), else the model fails with one line. ``session`` opens a file
under the timing protocol: CPUExecutionProvider, one intra-op and one inter-op thread, sequential;
``BoundCall`` is one timed call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kdtune import metrics
from kdtune.compat.onnx import OPSET, ExportFailed, OnnxFile, export_onnx
from kdtune.errors import KdtuneError

TOLERANCE = 1.0e-3  # relative to the logits' magnitude, max(1, max |logit|)
CHECK_BATCH = 2  # the fixed input's batch; > 1, so that the exported batch axis stays dynamic
CHECK_SEED = 0
FIX = "set evaluation.latency.runtime: torch to time the PyTorch model instead"


@dataclass(frozen=True, repr=False)
class OnnxModel:
    """A model as ONNX: its ``file`` and how far ONNX Runtime's logits were from PyTorch's on the fixed input."""

    name: str
    file: OnnxFile
    max_abs_diff: float

    @property
    def metrics(self) -> dict[str, float]:
        return {metrics.ONNX_MAX_ABS_DIFF: self.max_abs_diff}


def to_onnx(name: str, model: nn.Module, input_shape: tuple[int, ...]) -> OnnxModel:
    """``model`` exported (on the CPU, in eval mode) and checked: its logits in ONNX Runtime against PyTorch's on
    ``CHECK_BATCH`` seeded uniform images of ``input_shape``, and on the first of them alone. ``name`` names the model in the one-line
    ``KdtuneError`` raised when it cannot be exported or computes other logits."""
    model = _on_cpu(model).eval()
    x = torch.rand(CHECK_BATCH, *input_shape, generator=torch.Generator().manual_seed(CHECK_SEED))  # (B, C, H, W)
    try:
        file = export_onnx(model, x)
        run = runner(session(file.data))
        got = np.concatenate([run(x.numpy()), run(x[:1].numpy())])  # batch 1 too: the batch axis is not baked in
    except ExportFailed as err:
        raise KdtuneError(f"model '{name}' cannot be exported to ONNX (opset {OPSET}): {err}; {FIX}") from None
    except Exception as err:  # noqa: BLE001 - ONNX Runtime's errors are many: one line, whichever
        raise KdtuneError(f"model '{name}' was exported to ONNX but ONNX Runtime cannot run it "
                          f"({type(err).__name__}: {str(err).strip()[:200]}); {FIX}") from None
    with torch.inference_mode():
        expected = torch.cat([model(x), model(x[:1])]).numpy()  # (B + 1, K)
    diff = float(np.max(np.abs(got - expected)))
    bound = TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
    if not diff <= bound:  # NaN fails too
        raise KdtuneError(f"model '{name}': ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} on a "
                          f"fixed input, over the bound {bound:.3g} ({TOLERANCE:g} x max(1, max |logit|)); the "
                          f"{file.exporter} exporter changed what the model computes; {FIX}")
    return OnnxModel(name, file, diff)


def session(data: bytes) -> Any:
    """An ``onnxruntime.InferenceSession`` of the ONNX model ``data`` under the timing protocol."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def runner(sess: Any) -> Callable[[np.ndarray], np.ndarray]:
    """One call of ``sess`` on a float32 batch (B, ...) -> its logits (B, K)."""
    feed, output = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    return lambda x: sess.run([output], {feed: x})[0]


class BoundCall:
    """One call of ``sess`` on ``x``, bound once (IOBinding): each call is the session's run alone, without
    converting arrays (3 us of the 7 us an MLP's ``run`` takes at batch 1)."""

    def __init__(self, sess: Any, x: np.ndarray) -> None:
        self.sess, self.x = sess, x  # the binding points into x: kept alive here
        self.binding = sess.io_binding()
        self.binding.bind_cpu_input(sess.get_inputs()[0].name, x)
        self.binding.bind_output(sess.get_outputs()[0].name)

    def __call__(self) -> None:
        self.sess.run_with_iobinding(self.binding)


def _on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself when it lives on the CPU, else a CPU copy (the caller's model stays where it is)."""
    on_cpu = all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))
    return model if on_cpu else copy.deepcopy(model).cpu()

