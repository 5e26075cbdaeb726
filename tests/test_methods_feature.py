import gc
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdtune.train
from kdtune.config import TrainSpec
from kdtune.data import MNIST_INFO
from kdtune.errors import ConfigError
from kdtune.methods import METHODS, MethodContext, build_method
from kdtune.methods._feature import pool_to_common_size
from kdtune.methods._taps import FeatureTap
from kdtune.models import build_model
from kdtune.teacher import frozen
from kdtune.train import fit_student
from kdtune.evaluate import logits_of

FEATURE_METHODS = ["cosine", "fitnets"]


def spec(**kw):
    base = {"model": {"name": "mlp", "hidden": [32]}, "epochs": 3, "batch_size": 64, "lr": 3.0e-3}
    return TrainSpec.model_validate({**base, **kw})


def context(data, teacher, tmp_path):
    return MethodContext(data, teacher, logits_of(teacher, data.train.x), spec(), 0, tmp_path)


def conv_net(channels: int, pool: int) -> nn.Module:
    """A tiny CNN on (B, 1, 28, 28): its "features" output is (B, channels, 28 / pool, 28 / pool)."""
    features = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool))
    head = nn.Sequential(nn.Flatten(), nn.Linear(channels * (28 // pool) ** 2, 10))
    return nn.Sequential(OrderedDict(features=features, head=head))


# ---------------------------------------------------------------- FeatureTap


@pytest.mark.parametrize(("layer", "width"), [("auto", 32), ("net.2", 32), ("net.1", 32), ("net.0", 784)])
def test_tap_captures_the_named_layer(layer, width):
    model = build_model("mlp", {"hidden": [32]}, MNIST_INFO)  # net: Flatten, Linear, ReLU, Linear
    tap = FeatureTap(model, layer)
    model(torch.rand(5, 1, 28, 28))
    assert tap.features.shape == (5, width)


def test_tap_auto_is_the_input_of_the_last_linear():
    model = conv_net(4, 2)
    with FeatureTap(model, "auto") as tap, FeatureTap(model, "features") as fmap:
        model(torch.rand(3, 1, 28, 28))
    assert fmap.features.shape == (3, 4, 14, 14)
    torch.testing.assert_close(tap.features, fmap.features.flatten(1))  # (B, C*H*W) into the head


def test_tap_unknown_layer_suggests_the_closest_name():
    model = build_model("mlp", {"hidden": [32]}, MNIST_INFO)
    with pytest.raises(ConfigError, match=r"unknown layer 'net\.22' \(did you mean 'net\.2'\?\).*net\.0, net\.1"):
        FeatureTap(model, "net.22", what="student_layer")


def test_tap_auto_needs_a_linear_head():
    with pytest.raises(ConfigError, match="no nn.Linear"):
        FeatureTap(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), "auto")


def test_tap_context_manager_unhooks():
    model = build_model("mlp", {"hidden": [8]}, MNIST_INFO)
    with FeatureTap(model, "net.2") as tap:
        model(torch.rand(2, 1, 28, 28))
    first = tap.features
    model(torch.rand(4, 1, 28, 28))
    assert tap.features is first
    assert not model.net[2]._forward_hooks


# ---------------------------------------------------------------- cosine


def test_pool_to_common_size_averages_the_longer_vector():
    a, b = torch.arange(12.0).view(2, 6), torch.ones(2, 3)
    pa, pb = pool_to_common_size(a, b)
    torch.testing.assert_close(pa, a.view(2, 3, 2).mean(-1))
    assert torch.equal(pb, b)  # the shorter one is left alone
    swapped = pool_to_common_size(b, a)  # either side may be the longer one
    torch.testing.assert_close(swapped[1], pa)


def test_cosine_term_equals_one_minus_cos_by_hand(small_data, small_teacher, tmp_path):
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [32]}, small_data.info)
    d = build_method("cosine", {"weight": 0.4}, context(small_data, small_teacher, tmp_path))
    d.attach(student)
    idx = torch.arange(16)
    x, y = small_data.train.x[idx], small_data.train.y[idx]
    d.begin_batch(x, idx)
    logits = student(x)
    task = d.terms(logits, x, y, idx)["task"]

    h_s = F.relu(student.net[1](student.normalize(x).flatten(1)))  # (16, 32)
    with torch.no_grad():
        h_t = F.relu(small_teacher.net[1](small_teacher.normalize(x).flatten(1))).view(16, 32, 2).mean(-1)  # 64 -> 32
    cos = (h_s * h_t).sum(1) / (h_s.norm(dim=1) * h_t.norm(dim=1))
    expected = 0.6 * F.cross_entropy(logits, y) + 0.4 * (1 - cos).mean()
    torch.testing.assert_close(task, expected)
    task.backward()
    assert student.net[1].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- fitnets


def test_fitnets_vector_regressor_maps_student_to_teacher_width(small_data, small_teacher, tmp_path):
    d = build_method("fitnets", {}, context(small_data, small_teacher, tmp_path))
    d.attach(build_model("mlp", {"hidden": [32]}, small_data.info))
    assert isinstance(d.regressor, nn.Linear)
    assert (d.regressor.in_features, d.regressor.out_features) == (32, 64)


def test_fitnets_conv_regressor_pools_the_teacher_map_and_trains(small_data, tmp_path):
    torch.manual_seed(0)
    teacher, student = frozen(conv_net(8, 2), "cpu"), conv_net(4, 4)  # maps (8, 14, 14) and (4, 7, 7)
    ctx = MethodContext(small_data, teacher, None, spec(), 0, tmp_path)
    d = build_method("fitnets", {"teacher_layer": "features", "student_layer": "features"}, ctx)
    d.attach(student)
    assert isinstance(d.regressor, nn.Conv2d)
    assert (d.regressor.in_channels, d.regressor.out_channels, d.regressor.kernel_size) == (4, 8, (1, 1))

    idx = torch.arange(6)
    x, y = small_data.train.x[idx], small_data.train.y[idx]
    logits = student(x)
    pred, target = d.hint_pair(d.student_features(), d.teacher_features(x))
    assert pred.shape == target.shape == (6, 8, 7, 7)
    d.begin_batch(x, idx)
    d.terms(logits, x, y, idx)["task"].backward()
    assert d.regressor.weight.grad.abs().sum() > 0
    assert student.features[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_fitnets_regressor_is_in_the_optimizer_and_is_trained(small_data, small_teacher, tmp_path, monkeypatch):
    seen = {}
    make = kdtune.train.make_optimizer

    def spy(params, train_spec):
        params = list(params)
        seen["ids"] = {id(p) for p in params}
        seen["before"] = [p.detach().clone() for p in d.regressor.parameters()]
        return make(params, train_spec)

    monkeypatch.setattr(kdtune.train, "make_optimizer", spy)
    d = build_method("fitnets", {}, context(small_data, small_teacher, tmp_path))
    fit_student(build_model("mlp", {"hidden": [32]}, small_data.info), small_data, spec(epochs=1), distiller=d, seed=0)
    assert {id(p) for p in d.regressor.parameters()} <= seen["ids"]
    assert not {id(p) for p in small_teacher.parameters()} & seen["ids"]
    assert all(not torch.equal(b, p) for b, p in zip(seen["before"], d.regressor.parameters()))


# ---------------------------------------------------------------- both


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_feature_methods_need_a_teacher_and_check_its_layer(name, small_data, small_teacher, tmp_path):
    with pytest.raises(ConfigError, match="needs a teacher"):
        build_method(name, {}, MethodContext(small_data, None, None, spec(), 0, tmp_path))
    with pytest.raises(ConfigError, match=r"teacher_layer: unknown layer 'net\.7' \(did you mean"):
        build_method(name, {"teacher_layer": "net.7"}, context(small_data, small_teacher, tmp_path))
    assert METHODS.validate(name, {}) == {"weight": 0.25, "teacher_layer": "auto", "student_layer": "auto"}


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_the_student_hook_goes_away_with_the_distiller(name, small_data, small_teacher, tmp_path):
    student = build_model("mlp", {"hidden": [8]}, small_data.info)
    d = build_method(name, {}, context(small_data, small_teacher, tmp_path))
    d.attach(student)
    assert student.net[3]._forward_pre_hooks
    del d
    gc.collect()
    assert not student.net[3]._forward_pre_hooks  # no hook left to slow down latency measurements


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_feature_method_trains_a_student(name, small_data, small_teacher, tmp_path):
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [32]}, small_data.info)
    d = build_method(name, {}, context(small_data, small_teacher, tmp_path))
    history = fit_student(student, small_data, spec(), distiller=d, seed=0)
    assert history[-1]["train/task"] < history[0]["train/task"]
    assert history[-1]["val/acc"] > 0.5  # chance is 0.1
