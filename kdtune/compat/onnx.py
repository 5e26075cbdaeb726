"""A model to ONNX: the one place kdtune calls ``torch.onnx.export``.

torch has two exporters. The TorchScript one (``dynamo=False``) is deprecated but about 50x faster
(0.02 s for an MLP, 0.7 s for a ResNet-18, against 0.9-2.3 s per model for the ``torch.export``-based
one, the default since torch 2.9), and a study exports every trial's student. So it goes first, its
DeprecationWarning silenced; the dynamo exporter is the fallback when it fails or is gone from torch.
Both give opset ``OPSET`` with a dynamic batch axis, so one file serves every batch size.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

OPSET = 18
INPUT, OUTPUT = "x", "logits"
EXPORTERS = ("torchscript", "dynamo")  # tried in this order
EXPORTER_NAMES = {"torchscript": "TorchScript exporter (dynamo=False)", "dynamo": "dynamo exporter (dynamo=True)"}


@dataclass(frozen=True, repr=False)
class OnnxFile:
    """A serialized ONNX model and the exporter that wrote it (one of ``EXPORTERS``)."""

    data: bytes
    exporter: str


class ExportFailed(Exception):
    """Neither exporter could export the model; ``str()`` gives each one's reason."""


def export_onnx(model: nn.Module, example: Tensor) -> OnnxFile:
    """``model`` (in eval mode, on ``example``'s device) as ONNX, traced on ``example`` (B, ...) with B > 1
    (torch.export specializes a dynamic dimension of size 1). Raises ``ExportFailed``."""
    reasons = []
    for exporter, export in zip(EXPORTERS, (_torchscript, _dynamo)):
        try:
            return OnnxFile(export(model, example), exporter)
        except Exception as err:  # noqa: BLE001 - an exporter fails in many ways; the next one may not
            reasons.append(f"{exporter} exporter: {_first_line(err)}")
    raise ExportFailed("; ".join(reasons))


def _torchscript(model: nn.Module, example: Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return buffer.getvalue()


def _dynamo(model: nn.Module, example: Tensor) -> bytes:
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its progress notes; a failure raises
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=({0: batch},), verbose=False)
    return program.model_proto.SerializeToString()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:200] if text else "") or type(err).__name__
