"""A network saved with ``torch.export`` (a ``.pt2`` archive, MLflow's default PyTorch format) as a module
kdtune can use as a teacher.

The graph module ``torch.export.load(...).module()`` returns runs as it was exported (dropout and batch-norm
modes included) and refuses ``train()``/``eval()``, and it cannot be pickled, which Ray does to ship the
teacher to the trials. ``ExportedNet`` wraps it: ``train``/``eval`` only set its flag, and it pickles as its
archive (rebuilt on the device it was on).
"""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn


class ExportedNet(nn.Module):
    """``net``, the graph module of the ``.pt2`` ``archive`` (loaded from it when not given)."""

    def __init__(self, archive: bytes, net: nn.Module | None = None) -> None:
        super().__init__()
        self.archive = archive
        self.net = net if net is not None else torch.export.load(io.BytesIO(archive)).module()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> ExportedNet:
        self.training = mode  # the graph keeps the mode it was exported in
        return self

    def __reduce__(self) -> tuple:
        device = next((t.device for t in self.net.state_dict().values()), torch.device("cpu"))
        return _rebuilt, (self.archive, str(device), self.training)


def _rebuilt(archive: bytes, device: str, training: bool) -> ExportedNet:
    net = ExportedNet(archive).to(device)
    net.training = training
    return net
