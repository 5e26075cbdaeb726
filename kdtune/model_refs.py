"""Models by reference: ``torchvision:<name>``, ``timm:<name>`` and a plugin's ``module:function``.

Each becomes a ``MODELS`` entry on first use, so a study validates its parameters at load and builds it
like a registered model (``kdtune.models.build_model``: pixels in [0, 1] in, normalized inside):

- ``torchvision:resnet18``: any ``torchvision.models.get_model`` name, untrained, with ``num_classes`` set
  to the dataset's; a first convolution that expects other channels than the data has is replaced;
- ``timm:resnet18``: ``timm.create_model`` with the dataset's classes and channels (needs timm);
- ``my_project.models:build_student``: a callable in a plugin's package (``kdtune.references``), called
  with its parameters plus whichever of ``input_shape``, ``n_classes``, ``num_classes``, ``in_channels``
  it accepts; it must return an ``nn.Module``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pydantic
from torch import nn

from kdtune import references
from kdtune.errors import ConfigError
from kdtune.registry import Entry, did_you_mean

CONTEXT = ("input_shape", "n_classes", "num_classes", "in_channels")  # filled in from the dataset
REFERENCE_FORMS = (  # what ``kdtune list`` shows besides the registered names
    ("torchvision:<name>", ("any torchvision.models.get_model name (e.g. torchvision:resnet18), untrained, "
                            "adapted to the data's channels and classes")),
    ("timm:<name>", "any timm.create_model name, with the data's channels and classes (pip install timm)"),
    ("package.module:function", "a callable in a package named by the study's plugins, returning an nn.Module"),
)


def model_reference(name: str) -> Entry:
    """The ``MODELS`` entry for a reference; an unknown or refused one raises ``ConfigError``."""
    zoo, _, arch = name.partition(":")
    if zoo == "torchvision":
        return _torchvision(name, arch)
    if zoo == "timm":
        return _timm(name, arch)
    fn = references.resolve(name, kind="model")
    return Entry(name, _calling(name, fn), _first_line(fn), _schema(name, fn), None)


def _torchvision(name: str, arch: str) -> Entry:
    import torchvision.models

    known = torchvision.models.list_models()
    if arch not in known:
        raise ConfigError(f"model '{name}': torchvision has no model '{arch}'{did_you_mean(arch, known)}; "
                          "see torchvision.models.list_models()")

    def build(*, input_shape: tuple[int, ...], n_classes: int, **params: Any) -> nn.Module:
        net = torchvision.models.get_model(arch, weights=None, **{"num_classes": n_classes, **params})
        return _with_channels(net, input_shape[0])

    return Entry(name, build, f"torchvision's {arch}, untrained", _open_schema(name), None)


def _timm(name: str, arch: str) -> Entry:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model '{name}' needs timm, which is not installed; pip install timm") from None
    if arch not in timm.list_models():
        raise ConfigError(f"model '{name}': timm has no model '{arch}'{did_you_mean(arch, timm.list_models())}")

    def build(*, input_shape: tuple[int, ...], n_classes: int, **params: Any) -> nn.Module:
        return timm.create_model(arch, pretrained=False, **{"num_classes": n_classes, "in_chans": input_shape[0],
                                                            **params})

    return Entry(name, build, f"timm's {arch}, untrained", _open_schema(name), None)


def _calling(name: str, fn: Callable[..., Any]) -> Callable[..., nn.Module]:
    accepted = set(inspect.signature(fn).parameters)

    def build(*, input_shape: tuple[int, ...], n_classes: int, **params: Any) -> nn.Module:
        context = {"input_shape": tuple(input_shape), "n_classes": n_classes, "num_classes": n_classes,
                   "in_channels": input_shape[0]}
        net = fn(**{k: v for k, v in context.items() if k in accepted}, **params)
        if not isinstance(net, nn.Module):
            raise ConfigError(f"model '{name}' returned a {type(net).__name__}, not a torch.nn.Module; "
                              "return the network itself")
        return net

    return build


def _schema(name: str, fn: Callable[..., Any]) -> type[pydantic.BaseModel]:
    """The user's parameters (keyword or positional-or-keyword) with their annotations and defaults."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: validate nothing but the names
        hints = {}
    fields: dict[str, Any] = {}
    extra = "forbid"
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in CONTEXT:
            fields[p.name] = (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
    config = pydantic.ConfigDict(extra=extra, arbitrary_types_allowed=True)
    return pydantic.create_model(f"{name}_params", __config__=config, **fields)


def _open_schema(name: str) -> type[pydantic.BaseModel]:
    """Any keyword parameters: they go to the zoo's own constructor, which checks them when it builds."""
    return pydantic.create_model(f"{name}_params", __config__=pydantic.ConfigDict(extra="allow"))


def _with_channels(net: nn.Module, channels: int) -> nn.Module:
    """``net`` with its first convolution taking ``channels`` input channels (a fresh one where it differs)."""
    for parent in net.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != channels:
                    setattr(parent, child_name, nn.Conv2d(
                        channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                        child.dilation, child.groups, child.bias is not None, child.padding_mode,
                    ))
                return net
    return net


def _first_line(fn: Callable[..., Any]) -> str:
    return (inspect.getdoc(fn) or "").split("\n", 1)[0]
