"""Tests for the convolutional models: LeNet-5 (Lopes et al.), the KD tutorial's DeepNN / LightNN and the
small-image ResNet-18; parameter counts from hand formulas, and every registered model on every image
shape kdtune ships (MNIST 1x28x28, digits 1x8x8, CIFAR-10 3x32x32)."""

from __future__ import annotations

import pytest
import torch
import torchvision.models
from torch import nn

from kdtune.data import DataInfo
from kdtune.errors import ConfigError
from kdtune.models import MODELS, Classifier, build_model, n_params

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32)]


def conv(c_in: int, c_out: int, k: int) -> int:
    """Weights + biases of a k x k convolution."""
    return c_out * c_in * k * k + c_out


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def info(shape: tuple[int, int, int], n_classes: int = 10) -> DataInfo:
    c = shape[0]
    return DataInfo(shape, n_classes, tuple(0.1 * (i + 1) for i in range(c)), tuple(0.2 + 0.1 * i for i in range(c)))


def lenet_params(c: int, widths: tuple[int, int, int, int], n_classes: int = 10) -> int:
    """LeNet on a 32x32 geometry: 32 -conv5-> 28 -pool-> 14 -conv5-> 10 -pool-> 5, so FC in = c2 * 5 * 5."""
    c1, c2, f1, f2 = widths
    return conv(c, c1, 5) + conv(c1, c2, 5) + linear(c2 * 5 * 5, f1) + linear(f1, f2) + linear(f2, n_classes)


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize(("name", "widths"), [("lenet5", (6, 16, 120, 84)), ("lenet5_half", (3, 8, 60, 42))])
def test_lenet_counts_follow_the_32x32_geometry(name: str, widths: tuple, shape: tuple) -> None:
    assert n_params(build_model(name, {}, info(shape))) == lenet_params(1, widths)


def test_lenet_sizes_match_the_classic_numbers() -> None:
    assert lenet_params(1, (6, 16, 120, 84)) == 61_706  # LeNet-5 on MNIST
    assert lenet_params(1, (3, 8, 60, 42)) == 15_738
    assert n_params(build_model("lenet5", {}, info((3, 32, 32)))) == lenet_params(3, (6, 16, 120, 84))


@pytest.mark.parametrize(("shape", "pad"), [((1, 32, 32), (0, 0)), ((1, 28, 28), (2, 2)), ((1, 8, 8), (12, 12))])
def test_lenet_pads_small_images_to_32x32_in_the_first_conv(shape: tuple, pad: tuple) -> None:
    net = build_model("lenet5", {}, info(shape)).net
    assert net.features[0].padding == pad
    assert net.features(torch.zeros(1, *shape)).shape == (1, 16, 5, 5)


def test_tutorial_cnn_counts_on_cifar10() -> None:
    # the tutorial's layers: flatten 2048 = 32 x 8 x 8 (DeepNN) and 1024 = 16 x 8 x 8 (LightNN)
    deep = conv(3, 128, 3) + conv(128, 64, 3) + conv(64, 64, 3) + conv(64, 32, 3) + linear(2048, 512) + linear(512, 10)
    light = conv(3, 16, 3) + conv(16, 16, 3) + linear(1024, 256) + linear(256, 10)
    assert (deep, light) == (1_186_986, 267_738)
    assert n_params(build_model("deepnn", {}, info((3, 32, 32)))) == deep
    assert n_params(build_model("lightnn", {}, info((3, 32, 32)))) == light


def test_tutorial_cnns_size_their_classifier_from_the_input() -> None:
    # 28 -> 14 -> 7 and 8 -> 4 -> 2 after the two pools
    deep_convs = conv(1, 128, 3) + conv(128, 64, 3) + conv(64, 64, 3) + conv(64, 32, 3)
    deep_mnist = deep_convs + linear(32 * 7 * 7, 512) + linear(512, 10)
    assert n_params(build_model("deepnn", {}, info((1, 28, 28)))) == deep_mnist
    light_digits = conv(1, 16, 3) + conv(16, 16, 3) + linear(16 * 2 * 2, 256) + linear(256, 10)
    assert n_params(build_model("lightnn", {}, info((1, 8, 8)))) == light_digits


def test_tutorial_cnns_keep_the_dropout_as_a_parameter() -> None:
    dropouts = [m for m in build_model("deepnn", None, info((1, 28, 28))).net.classifier if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.1]
    no_dropout = build_model("lightnn", {"dropout": 0}, info((1, 28, 28)))
    assert not any(isinstance(m, nn.Dropout) for m in no_dropout.net.modules())
    with pytest.raises(ConfigError, match="parameter 'dropout'"):
        build_model("lightnn", {"dropout": 1.0}, info((1, 28, 28)))


@pytest.mark.parametrize("c", [1, 3])
def test_resnet18_is_torchvisions_with_a_3x3_stem(c: int) -> None:
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    expected = n_params(reference) - 64 * 3 * 7 * 7 + 64 * c * 3 * 3  # conv1 has no bias
    model = build_model("resnet18", {}, info((c, 32, 32)))
    assert n_params(model) == expected
    if c == 3:
        assert expected == 11_173_962
    conv1 = model.net.conv1
    assert (conv1.kernel_size, conv1.stride, conv1.padding, conv1.in_channels) == ((3, 3), (1, 1), (1, 1), c)
    assert isinstance(model.net.maxpool, nn.Identity)
    assert [n for n, _ in model.net.named_children()] == [n for n, _ in reference.named_children()]


def test_too_small_images_raise_a_config_error_naming_the_model() -> None:
    with pytest.raises(ConfigError, match=r"model 'deepnn' needs images of at least 4x4 pixels, got 3x3"):
        build_model("deepnn", {}, info((1, 3, 3)))


def test_feature_taps_have_stable_names() -> None:
    names = dict(build_model("lightnn", {}, info((3, 32, 32))).named_modules())
    assert {"net.features", "net.classifier"} <= set(names)
    assert names["net.features"](torch.zeros(2, 3, 32, 32)).shape == (2, 16, 8, 8)  # the tutorial's regressor tap


# ---------------------------------------------------------------- every model, every shape


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gives_finite_logits_and_gradients(name: str, shape: tuple) -> None:
    torch.manual_seed(0)
    model = build_model(name, {}, info(shape, n_classes=7))
    assert isinstance(model, Classifier)
    x = torch.rand(2, *shape)
    logits = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["lenet5", "lenet5_half", "deepnn", "lightnn"])
def test_normalization_is_inside_the_model(name: str) -> None:
    data = info((3, 32, 32))
    model = build_model(name, {}, data).eval()
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(data.mean).view(3, 1, 1), torch.tensor(data.std).view(3, 1, 1)
    torch.testing.assert_close(model(x), model.net((x - mean) / std))
    assert not any("mean" in n or "std" in n for n, _ in model.named_parameters())
