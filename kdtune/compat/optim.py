"""torch.optim without importing ``torch._dynamo``, which kdtune never uses.

The first time a process takes an optimizer step, torch imports ``torch._dynamo``, a cost every fresh Ray
trial actor would pay (docs/performance.md): ``Optimizer.step`` is wrapped so that it can place two graph
breaks for ``torch.compile``, and ``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict``
are wrapped to build a "do not compile" version of themselves on first call. Outside ``torch.compile``
neither does anything else: a graph break is a no-op and the "do not compile" version of a method is the
method.

``LeanAdam``, ``LeanAdamW`` and ``LeanSGD`` are ``torch.optim.Adam``, ``AdamW`` and ``SGD`` whose ``step`` runs
torch's own step under the grad mode torch sets, without the graph breaks; ``optimizers_without_dynamo`` caches the
plain methods where the other wrappers look for their "do not compile" version; it changes those methods
for every optimizer of the process, so only kdtune's trial actors call it. The optimizers' own code
(parameter groups, state, hooks, ``state_dict``) runs unchanged and updates are bit-identical
(``tests/test_lean_torch.py``, which also checks that training never imports ``torch._dynamo``, so that a
torch release that changes the mechanism is noticed). Not for code that ``torch.compile`` compiles.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from kdtune.compat import check_version

_DYNAMO_MODULE = "torch._dynamo"
_DISABLE_ATTR = "__dynamo_disable"  # where torch._compile._disable_dynamo caches its wrapped function


def optimizers_without_dynamo() -> list[str]:
    """Cache each ``torch._disable_dynamo``-wrapped method of ``torch.optim.Optimizer`` as its own "do not
    compile" version, unless ``torch._dynamo`` is already loaded (then torch's wrappers are left as they are).

    Returns the names of the methods it applies to (empty when none is wrapped so: nothing changes then).
    """
    check_version("torch")
    if _DYNAMO_MODULE in sys.modules:
        return []
    filled = []
    for name, attr in vars(torch.optim.Optimizer).items():
        inner = getattr(attr, "__wrapped__", None)
        if inner is not None and _defined_in(attr, "torch/_compile.py"):
            if getattr(inner, _DISABLE_ATTR, None) is None:
                setattr(inner, _DISABLE_ATTR, inner)
            filled.append(name)
    return sorted(filled)


def _defined_in(fn: Any, suffix: str) -> bool:
    code = getattr(fn, "__code__", None)
    return code is not None and code.co_filename.replace("\\", "/").endswith(suffix)


def _lean(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``base`` with a ``step`` that skips the graph-break wrapper (``base`` itself if it has none).

    The ``step`` is looked up along the MRO: torch's ``AdamW`` is an ``Adam`` that inherits Adam's step.
    """
    wrapped = next((c.__dict__["step"] for c in base.__mro__ if "step" in c.__dict__), None)
    inner: Callable[..., Any] | None = getattr(wrapped, "__wrapped__", None)
    if inner is None or not _defined_in(wrapped, "torch/optim/optimizer.py"):
        return base

    def step(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            return inner(self, closure)

    step.__doc__ = inner.__doc__
    name = f"Lean{base.__name__}"
    step.__qualname__ = f"{name}.step"
    return type(name, (base,), {"step": step, "__module__": __name__, "__qualname__": name,
                                "__doc__": f"``torch.optim.{base.__name__}`` without the torch._dynamo import."})


LeanAdam = _lean(torch.optim.Adam)
LeanSGD = _lean(torch.optim.SGD)
LeanAdamW = _lean(torch.optim.AdamW)
