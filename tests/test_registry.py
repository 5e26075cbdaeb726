"""The generic registry, and invariants that every registered loss and penalty must keep."""

import pytest
import torch

import kdtune.components  # noqa: F401 - enrolls every built-in registry and registers its entries
from kdtune.data import MNIST_INFO
from kdtune.errors import ConfigError
from kdtune.losses import LOSSES
from kdtune.models import build_model
from kdtune.penalties import PENALTIES
from kdtune.registry import Registry, registries

ENTRIES = [pytest.param(kind, name, id=f"{kind}-{name}") for kind, reg in registries().items() for name in reg.names()]


def test_registry_rejects_duplicates_and_explains_unknown_names():
    reg = Registry("widget")

    @reg.register("round")
    def round_widget(*, size: int = 1):
        """A round widget."""
        return size

    def other_round(*, size: int = 2):
        return size

    with pytest.raises(ValueError, match="already registered"):
        reg.register("round")(other_round)  # another function under a taken name
    reg.register("round")(round_widget)  # the same definition again (its module imported anew): kept
    assert reg.get("round") is round_widget
    with pytest.raises(ConfigError, match=r"unknown widget 'rnd'.*known: round"):
        reg.get("rnd")
    assert reg.entry("round").description == "A round widget."
    assert reg.build("round", size="3") == 3  # coerced from the signature's annotation
    with pytest.raises(ConfigError, match=r"unexpected parameter 'sise' \(did you mean 'size'\?\)"):
        reg.validate("round", {"sise": 2})
    assert reg.bind("round", {"size": 2})(size=5) == 5  # call-time keywords override bound ones


def _check_defaults(registry: Registry, name: str) -> None:
    """``{}`` validates to exactly the entry's defaults; an entry with a required parameter (default ``...``)
    rejects ``{}`` naming it."""
    defaults = registry.entry(name).defaults
    required = [k for k, v in defaults.items() if v is ...]
    if not required:
        assert registry.validate(name, {}) == defaults
        return
    with pytest.raises(ConfigError) as info:
        registry.validate(name, {})
    assert f"{registry.kind} '{name}': missing required parameter '{required[0]}'" in str(info.value)


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_every_entry_validates_its_defaults_or_names_what_is_required(kind, name):
    _check_defaults(registries()[kind], name)


def test_every_built_in_kind_is_covered():
    assert {"dataset", "model", "method", "loss", "penalty", "attack"} <= {p.values[0] for p in ENTRIES}


def test_the_defaults_check_catches_a_required_parameter():
    """No built-in entry has a required parameter today: the check's other branch, on a local registry."""
    reg = Registry("gadget")

    @reg.register("sized")
    def sized(*, size: int, colour: str = "red"):
        return size

    @reg.register("plain")
    def plain(*, colour: str = "red"):
        return colour

    assert reg.entry("sized").defaults == {"size": ..., "colour": "red"}
    _check_defaults(reg, "sized")
    _check_defaults(reg, "plain")


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_finite_and_differentiable(name):
    torch.manual_seed(0)
    s = torch.randn(8, 10, requires_grad=True)
    t, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss = LOSSES.bind(name, {})(s, t, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PENALTIES.names())
def test_every_penalty_is_finite_nonnegative_and_trains_the_model(name):
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [16]}, MNIST_INFO)
    x = torch.rand(8, 1, 28, 28, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    value = PENALTIES.bind(name, {})(model, x, y, model(x))
    assert value.ndim == 0 and torch.isfinite(value) and value >= 0
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
