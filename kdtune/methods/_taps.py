"""Feature taps: read a hidden representation out of any model by layer name, without subclassing it.

``FeatureTap(model, "net.2")`` stores the output of ``dict(model.named_modules())["net.2"]`` on every
forward; ``"auto"`` stores the *input* of the model's last ``nn.Linear`` (the penultimate representation,
the vector the classifier head reads). Use it as a context manager for a one-off read::

    with torch.no_grad(), FeatureTap(teacher, "auto") as tap:
        teacher(x)
    h = tap.features  # (B, D)
"""

from __future__ import annotations

from typing import Any, Self

from torch import Tensor, nn

from kdtune.errors import ConfigError
from kdtune.registry import did_you_mean

AUTO = "auto"
_N_SHOWN = 12  # layer names listed in an error message


def layer_names(model: nn.Module) -> list[str]:
    """The names a tap accepts: every named submodule (the root, named '', excluded)."""
    return [name for name, _ in model.named_modules() if name]


def last_linear(model: nn.Module, *, what: str = "layer") -> tuple[str, nn.Linear]:
    """The name and module of the last ``nn.Linear`` in ``model.named_modules()`` order (the head)."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"{what} 'auto': the model has no nn.Linear head to tap; name a layer instead ({_some(layer_names(model))})"
        )
    return linears[-1]


def resolve_layer(model: nn.Module, layer: str, *, what: str = "layer") -> tuple[str, nn.Module]:
    """``(name, module)`` for ``layer``; an unknown name raises ``ConfigError`` with a did-you-mean."""
    if layer == AUTO:
        return last_linear(model, what=what)
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        names = layer_names(model)
        raise ConfigError(
            f"{what}: unknown layer '{layer}'{did_you_mean(layer, names)}; "
            f"use 'auto' (the input of the last Linear) or one of: {_some(names)}"
        )
    return layer, modules[layer]


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_N_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _N_SHOWN else "")


class FeatureTap:
    """Stores one layer's output (or, for ``"auto"``, the last Linear's input) at every forward of ``model``.

    ``features`` is the latest stored tensor, graph attached, so a loss on it trains the layers below.
    ``what`` names the setting in error messages (e.g. ``"student_layer"``). ``remove()`` detaches the hook.
    """

    def __init__(self, model: nn.Module, layer: str = AUTO, *, what: str = "layer") -> None:
        self.layer, self.what = layer, what
        self.name, module = resolve_layer(model, layer, what=what)
        self._value: Any = None
        if layer == AUTO:  # the head's input: a pre-hook sees the Linear's positional args
            self._handle = module.register_forward_pre_hook(self._store_input)
        else:
            self._handle = module.register_forward_hook(self._store_output)

    def _store_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._value = args[0]

    def _store_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._value = output

    @property
    def features(self) -> Tensor:
        """The tensor seen by the latest forward, e.g. (B, D) or (B, C, H, W)."""
        if self._value is None:
            raise RuntimeError(f"feature tap on '{self.name}' has seen no forward pass yet")
        if not isinstance(self._value, Tensor):
            raise ConfigError(
                f"{self.what}: layer '{self.name}' outputs a {type(self._value).__name__}, not a tensor; "
                "tap a layer whose output is a single tensor"
            )
        return self._value

    def clear(self) -> None:
        self._value = None

    def remove(self) -> None:
        """Unhook from the model and drop the stored tensor (idempotent)."""
        self._handle.remove()
        self._value = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()  # the stored features stay readable after the block
