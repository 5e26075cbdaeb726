"""MODELS: teacher and student builders. Inputs are pixels in [0, 1]; each model normalizes internally,
so attacks and their eps live in pixel space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import pydantic
import torch
from torch import Tensor, nn

from kdtune.registry import Registry

MODELS: Registry = Registry("model")

PositiveInt = Annotated[int, pydantic.Field(gt=0)]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Normalize(nn.Module):
    """(x - mean) / std with constant buffers (no parameters, so parameter counts are unchanged)."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _mlp(hidden: Sequence[int], *, in_features: int, n_classes: int, mean: float, std: float) -> nn.Sequential:
    layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]  # (B, C, H, W) -> (B, C*H*W)
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


@MODELS.register("mlp")
def mlp(
    *,
    hidden: list[PositiveInt] = [64],  # noqa: B006 - validated copy, never mutated
    in_features: PositiveInt = 784,
    n_classes: PositiveInt = 10,
    mean: float = MNIST_MEAN,
    std: Annotated[float, pydantic.Field(gt=0)] = MNIST_STD,
) -> nn.Module:
    """ReLU MLP with the given hidden widths, e.g. ``hidden: [64]`` (search ``student.model.hidden.0``)."""
    return _mlp(hidden, in_features=in_features, n_classes=n_classes, mean=mean, std=std)


@MODELS.register("seed000_teacher")
def seed000_teacher(*, n_classes: PositiveInt = 10) -> nn.Module:
    """The seed-000 teacher: MLP 784-512-256-10 (535,818 parameters)."""
    return mlp(hidden=[512, 256], n_classes=n_classes)


@MODELS.register("seed000_student")
def seed000_student(*, n_classes: PositiveInt = 10) -> nn.Module:
    """The seed-000 student: MLP 784-64-10 (50,890 parameters)."""
    return mlp(hidden=[64], n_classes=n_classes)


@MODELS.register("hinton_1200")
def hinton_1200(*, n_classes: PositiveInt = 10) -> nn.Module:
    """Hinton et al. 2015 (arXiv:1503.02531) large MNIST net: MLP 784-1200-1200-10."""
    return mlp(hidden=[1200, 1200], n_classes=n_classes)


@MODELS.register("hinton_800")
def hinton_800(*, n_classes: PositiveInt = 10) -> nn.Module:
    """Hinton et al. 2015 (arXiv:1503.02531) small MNIST net: MLP 784-800-800-10."""
    return mlp(hidden=[800, 800], n_classes=n_classes)


def build_model(name: str, params: dict | None = None) -> nn.Module:
    """The model ``name`` built with validated ``params``."""
    return MODELS.build(name, **(params or {}))


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
