"""MODELS: teacher and student architectures.

A registered factory builds the body of a classifier from keyword hyperparameters plus two context
arguments filled in from the dataset, ``input_shape`` (C, H, W) and ``n_classes``; ``build_model`` wraps
the body in a ``Classifier`` that normalizes pixels first. Inputs are pixels in [0, 1], so attacks and
their eps live in pixel space, and layer names for feature taps read ``net.<i>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import pydantic
import torch
from torch import Tensor, nn

from kdtune.data import MNIST_INFO, DataInfo
from kdtune.registry import Registry

MODELS: Registry = Registry("model", context=("input_shape", "n_classes"))

PositiveInt = Annotated[int, pydantic.Field(gt=0)]


class Normalize(nn.Module):
    """(x - mean) / std per channel, with constant buffers (no parameters: counts are unchanged)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)  # (C, 1, 1)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``net(normalize(x))``: pixels in [0, 1] in, logits out."""

    def __init__(self, net: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


def _dense(hidden: Sequence[int], in_features: int, n_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


@MODELS.register("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    n_classes: int,
    hidden: list[PositiveInt] = [64],  # noqa: B006 - validated copy, never mutated
) -> nn.Module:
    """ReLU MLP with the given hidden widths, e.g. ``hidden: [64]`` (search ``student.model.hidden.0``)."""
    return _dense(hidden, math.prod(input_shape), n_classes)


@MODELS.register("seed000_teacher")
def seed000_teacher(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The seed-000 teacher: MLP 784-512-256-10 (535,818 parameters on MNIST)."""
    return _dense([512, 256], math.prod(input_shape), n_classes)


@MODELS.register("seed000_student")
def seed000_student(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The seed-000 student: MLP 784-64-10 (50,890 parameters on MNIST)."""
    return _dense([64], math.prod(input_shape), n_classes)


@MODELS.register("hinton_1200")
def hinton_1200(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Hinton et al. 2015 (arXiv:1503.02531) large MNIST net: MLP 784-1200-1200-10."""
    return _dense([1200, 1200], math.prod(input_shape), n_classes)


@MODELS.register("hinton_800")
def hinton_800(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Hinton et al. 2015 (arXiv:1503.02531) small MNIST net: MLP 784-800-800-10."""
    return _dense([800, 800], math.prod(input_shape), n_classes)


def build_model(name: str, params: Mapping[str, Any] | None = None, info: DataInfo = MNIST_INFO) -> Classifier:
    """The model ``name`` with validated ``params``, shaped for ``info`` (default: MNIST)."""
    net = MODELS.build(name, **dict(params or {}), input_shape=tuple(info.input_shape), n_classes=info.n_classes)
    return Classifier(net, info)


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
