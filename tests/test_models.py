import pytest
import torch

from kdtune.models import MODELS, build_model, n_params


def mlp_params(sizes):
    """Weights + biases of a dense net with layer sizes e.g. [784, 64, 10]."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def test_seed000_sizes_are_exact():
    assert n_params(build_model("seed000_teacher")) == 535_818
    assert n_params(build_model("seed000_student")) == 50_890


@pytest.mark.parametrize(
    "name,sizes",
    [("hinton_1200", [784, 1200, 1200, 10]), ("hinton_800", [784, 800, 800, 10])],
)
def test_hinton_mlps_match_their_layer_sizes(name, sizes):
    assert n_params(build_model(name)) == mlp_params(sizes)


@pytest.mark.parametrize("hidden", [[], [16], [32, 8], [100, 50, 25]])
def test_mlp_parameter_count_follows_the_formula(hidden):
    assert n_params(build_model("mlp", {"hidden": hidden})) == mlp_params([784, *hidden, 10])


def test_normalization_lives_inside_the_model():
    """A linear 'mlp' maps pixels x to W((x - mean)/std) + b: attacks can stay in pixel space."""
    model = build_model("mlp", {"hidden": []})
    linear = model[-1]
    x = torch.rand(3, 1, 28, 28)
    expected = linear((x.flatten(1) - 0.1307) / 0.3081)
    torch.testing.assert_close(model(x), expected)
    assert not any("mean" in n or "std" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_builds_and_gives_finite_logits(name):
    model = build_model(name)
    logits = model(torch.rand(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
