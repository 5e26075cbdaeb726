"""Code named in a study file: ``module:function`` references, allowed only where the user opted in.

Like Hugging Face's ``trust_remote_code``, a reference runs code, so it may only point inside the
top-level package of a plugin the study (or an installed ``kdtune.plugins`` entry point) loaded, or into a
known model zoo (``kdtune.plugins.ZOOS``). Anything else (``subprocess:run``, ``os:system``,
``builtins:eval``) is refused before it is imported.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from kdtune.errors import ConfigError
from kdtune.plugins import allowed_roots

_REFERENCE = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)")


def resolve(reference: str, *, kind: str) -> Callable[..., Any]:
    """The callable ``module:function`` names, if its top-level package is a loaded plugin's or a zoo."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise ConfigError(f"{kind} '{reference}': not a reference; write module:function, "
                          "e.g. my_project.models:build_student")
    module, attr = match["module"], match["attr"]
    root = module.split(".", 1)[0]
    if root not in allowed_roots():
        raise ConfigError(
            f"{kind} '{reference}': a study file may only reference code in its plugins' packages or in "
            f"{', '.join(sorted(allowed_roots()))}; list the package that holds it under plugins: (and never "
            "point a study at code you do not trust)"
        )
    try:
        target: Any = importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ConfigError(f"{kind} '{reference}': no module named '{err.name or module}'; check the reference "
                          "or install the package") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{kind} '{reference}': module '{module}' has no attribute '{attr}'; "
                              "check the name after the colon")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{kind} '{reference}': '{attr}' is not callable; point at a function or class")
    return target
