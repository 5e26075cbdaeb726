import pytest
import torch

from kdtune.data import MNIST_INFO, DataInfo
from kdtune.errors import ConfigError
from kdtune.models import MODELS, build_model, n_params


def mlp_params(sizes):
    """Weights + biases of a dense net with layer sizes e.g. [784, 64, 10]."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def test_seed000_sizes_are_exact():
    assert n_params(build_model("seed000_teacher", None, MNIST_INFO)) == 535_818
    assert n_params(build_model("seed000_student", None, MNIST_INFO)) == 50_890


@pytest.mark.parametrize(
    "name,sizes",
    [("hinton_1200", [784, 1200, 1200, 10]), ("hinton_800", [784, 800, 800, 10])],
)
def test_hinton_mlps_match_their_layer_sizes(name, sizes):
    assert n_params(build_model(name, None, MNIST_INFO)) == mlp_params(sizes)


@pytest.mark.parametrize("hidden", [[], [16], [32, 8], [100, 50, 25]])
def test_mlp_parameter_count_follows_the_formula(hidden):
    assert n_params(build_model("mlp", {"hidden": hidden}, MNIST_INFO)) == mlp_params([784, *hidden, 10])


def test_normalization_lives_inside_the_model():
    """A linear 'mlp' maps pixels x to W((x - mean)/std) + b: attacks can stay in pixel space."""
    model = build_model("mlp", {"hidden": []}, MNIST_INFO)
    linear = model.net[-1]
    x = torch.rand(3, 1, 28, 28)
    expected = linear((x.flatten(1) - 0.1307) / 0.3081)
    torch.testing.assert_close(model(x), expected)
    assert not any("mean" in n or "std" in n for n, _ in model.named_parameters())


def test_models_take_their_shape_and_normalization_from_the_data():
    info = DataInfo((3, 8, 8), 7, (0.2, 0.4, 0.6), (0.5, 0.5, 0.25))
    model = build_model("mlp", {"hidden": [5]}, info)
    assert n_params(model) == mlp_params([3 * 8 * 8, 5, 7])
    x = torch.rand(2, 3, 8, 8)
    expected = (x - torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1)) / torch.tensor([0.5, 0.5, 0.25]).view(3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)
    assert model(x).shape == (2, 7)


def test_build_model_assumes_no_dataset():
    with pytest.raises(TypeError, match="info"):
        build_model("mlp", {"hidden": [5]})  # type: ignore[call-arg]


def test_context_arguments_are_not_user_parameters():
    with pytest.raises(ConfigError, match="unexpected parameter 'n_classes'"):
        MODELS.validate("mlp", {"n_classes": 3})


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_builds_and_gives_finite_logits(name):
    model = build_model(name, None, MNIST_INFO)
    logits = model(torch.rand(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_frozen_teachers_size_counts_every_parameter():
    """The teacher is evaluated frozen (no gradients): its model/params is still its full size."""
    from kdtune.teacher import frozen

    model = frozen(build_model("seed000_teacher", None, MNIST_INFO), "cpu")
    assert not any(p.requires_grad for p in model.parameters())
    assert n_params(model) == 535_818
