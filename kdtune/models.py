"""MODELS: teacher and student architectures.

A registered factory builds the body of a classifier from keyword hyperparameters plus two context
arguments filled in from the dataset, ``input_shape`` (C, H, W) and ``n_classes``; ``build_model`` wraps
the body in a ``Classifier`` that normalizes pixels first. Inputs are pixels in [0, 1], so attacks and
their eps live in pixel space, and layer names for feature taps read ``net.<...>``: ``net.<i>`` for the
MLPs, ``net.features`` (last conv block, before flattening) and ``net.classifier.<i>`` for the LeNets and
the tutorial CNNs, torchvision's names (``net.layer4``, ``net.fc``) for ``resnet18``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import pydantic
import torch
from torch import Tensor, nn

from kdtune.data import DataInfo
from kdtune.errors import ConfigError
from kdtune.model_refs import REFERENCE_FORMS, model_reference
from kdtune.registry import Registry

MODELS: Registry = Registry("model", context=("input_shape", "n_classes"), references=model_reference,
                            reference_forms=REFERENCE_FORMS)

PositiveInt = Annotated[int, pydantic.Field(gt=0)]
DropRate = Annotated[float, pydantic.Field(ge=0, lt=1)]


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


# ---------------------------------------------------------------- convolutional nets


def _conv_net(
    name: str,
    features: nn.Sequential,
    hidden: Sequence[int],
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    dropout: float = 0.0,
    min_side: int = 1,
) -> nn.Sequential:
    """``features`` then a ReLU MLP classifier whose input size comes from a dry run on ``input_shape``.

    The classifier is ``Flatten, (Linear, ReLU[, Dropout])*, Linear``; a dropout rate of 0 adds no layer.
    """
    c, h, w = input_shape
    if min(h, w) < min_side:
        raise ConfigError(
            f"model '{name}' needs images of at least {min_side}x{min_side} pixels, got {h}x{w}; "
            "pick a dataset with larger images or another model"
        )
    with torch.no_grad():
        n_flat = features(torch.zeros(1, c, h, w)).numel()  # (1, C', H', W') -> C'*H'*W'
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C', H', W') -> (B, C'*H'*W')
    width = n_flat
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        width = size
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(OrderedDict(features=features, classifier=nn.Sequential(*layers)))


_LENET_SIDE = 32  # LeNet-5's input size (LeCun et al. 1998; Lopes et al. resize MNIST to 32x32)


def _lenet(name: str, widths: tuple[int, int, int, int], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """conv 5x5 -> ReLU -> maxpool 2 -> conv 5x5 -> ReLU -> maxpool 2 -> FC -> FC -> FC.

    Images smaller than 32x32 get zero padding (after normalization, i.e. at the mean pixel) in the first
    conv, enough to reach LeNet-5's 32x32 geometry: 2 pixels per side on 28x28 (the classic MNIST setup),
    12 on 8x8. Every input up to 32x32 therefore gives 5x5 maps and the same parameter count; larger
    inputs are not padded and give a larger first FC layer.
    """
    c, h, w = input_shape
    pad = tuple(max(0, math.ceil((_LENET_SIDE - side) / 2)) for side in (h, w))
    c1, c2, f1, f2 = widths
    features = nn.Sequential(
        nn.Conv2d(c, c1, kernel_size=5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    return _conv_net(name, features, [f1, f2], input_shape, n_classes)


@MODELS.register("lenet5")
def lenet5(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) as in Lopes et al.'s data-free KD code: conv 6, 16 (5x5), FC 120-84-n.

    ReLU and 2x2 max-pooling; 61,706 parameters on MNIST; images under 32x32 are zero-padded in the first
    conv (see ``_lenet``). Lopes et al. 2017, arXiv:1710.07535.
    """
    return _lenet("lenet5", (6, 16, 120, 84), input_shape, n_classes)


@MODELS.register("lenet5_half")
def lenet5_half(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """LeNet-5-half of Lopes et al. (arXiv:1710.07535): every layer half as wide, conv 3, 8, FC 60-42-n.

    15,738 parameters on MNIST; padding as for ``lenet5``.
    """
    return _lenet("lenet5_half", (3, 8, 60, 42), input_shape, n_classes)


def _conv3(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU()]


@MODELS.register("deepnn")
def deepnn(*, input_shape: tuple[int, ...], n_classes: int, dropout: DropRate = 0.1) -> nn.Module:
    """The PyTorch KD tutorial's CIFAR-10 teacher (DeepNN): conv 128, 64, pool, conv 64, 32, pool, FC 512-n.

    3x3 convs with padding 1; 1,186,986 parameters on CIFAR-10 (flatten size 2048 = 32x8x8 there,
    computed from the input shape elsewhere). Needs images of at least 4x4.
    """
    c = input_shape[0]
    features = nn.Sequential(
        *_conv3(c, 128), *_conv3(128, 64), nn.MaxPool2d(2),
        *_conv3(64, 64), *_conv3(64, 32), nn.MaxPool2d(2),
    )  # fmt: skip
    return _conv_net("deepnn", features, [512], input_shape, n_classes, dropout=dropout, min_side=4)


@MODELS.register("lightnn")
def lightnn(*, input_shape: tuple[int, ...], n_classes: int, dropout: DropRate = 0.1) -> nn.Module:
    """The PyTorch KD tutorial's CIFAR-10 student (LightNN): conv 16, pool, conv 16, pool, FC 256-n.

    3x3 convs with padding 1; 267,738 parameters on CIFAR-10 (flatten size 1024 = 16x8x8 there).
    Needs images of at least 4x4.
    """
    c = input_shape[0]
    features = nn.Sequential(*_conv3(c, 16), nn.MaxPool2d(2), *_conv3(16, 16), nn.MaxPool2d(2))
    return _conv_net("lightnn", features, [256], input_shape, n_classes, dropout=dropout, min_side=4)


@MODELS.register("resnet18")
def resnet18(*, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """ResNet-18 (He et al. 2015, arXiv:1512.03385) from torchvision with the usual CIFAR stem for small images.

    The stem is a 3x3 stride-1 conv without max-pool; 11,173,962 parameters on CIFAR-10.
    """
    import torchvision.models  # lazy: only this model needs it

    net = torchvision.models.resnet18(weights=None, num_classes=n_classes)
    net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    net.maxpool = nn.Identity()
    return net


def build_model(name: str, params: Mapping[str, Any] | None, info: DataInfo) -> Classifier:
    """The model ``name`` with validated ``params`` (None: defaults), shaped and normalized for ``info``."""
    net = MODELS.build(name, **dict(params or {}), input_shape=tuple(info.input_shape), n_classes=info.n_classes)
    return Classifier(net, info)


def n_params(model: nn.Module) -> int:
    """Number of parameters (the model's size), trainable or frozen: a frozen teacher counts in full."""
    return sum(p.numel() for p in model.parameters())
