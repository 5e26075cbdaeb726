"""Users' own code: plugin modules that register components with kdtune's decorators.

A study names its plugins (``plugins: [my_project.kd_parts]``); installed packages may also expose
plugins through the ``kdtune.plugins`` entry-point group, as pytest and Ray discover theirs. Plugins are
imported in the driver before the study is validated and in every trial's worker before it runs. Loading
a plugin is also the opt-in for code references: a ``module:function`` in a study file may only point
inside the top-level package of a loaded plugin (``allowed_roots``), or into a known model zoo.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from importlib import metadata

from kdtune.errors import ConfigError

ENTRY_POINT_GROUP = "kdtune.plugins"
ZOOS = frozenset({"torchvision", "timm"})  # model zoos a study may reference without a plugin
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_roots: set[str] = set()  # top-level packages of the plugins loaded in this process
_entry_points_loaded = False


def load_plugins(modules: Sequence[str], *, source: str = "plugins") -> None:
    """Import the installed entry-point plugins (once per process) and ``modules``; a plugin that is
    missing or fails while importing raises one ``ConfigError`` line naming it and the fix."""
    _load_entry_points()
    for i, name in enumerate(modules):
        if not isinstance(name, str) or not _MODULE.fullmatch(name):
            raise ConfigError(f"{source}[{i}]: {name!r} is not a module name; write it as in an import, "
                              "e.g. my_project.kd_parts")
        _import(name, f"{source}[{i}]")


def allowed_roots() -> frozenset[str]:
    """The top-level packages a study's code references may point into: loaded plugins' and the zoos."""
    return ZOOS | frozenset(_roots)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        _import(point.module, f"entry point '{point.name}' ({ENTRY_POINT_GROUP})")


def _import(name: str, where: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise ConfigError(f"{where}: no module named '{name}'; install your project (pip install -e .) or run "
                              "kdtune from the folder that holds it") from None
        raise ConfigError(f"{where}: plugin '{name}' failed to import: {_line(err)}; fix the plugin") from None
    except Exception as err:  # noqa: BLE001 - a user's plugin that raises is the user's to fix
        raise ConfigError(f"{where}: plugin '{name}' failed to import: {_line(err)}; fix the plugin") from None
    _roots.add(name.split(".", 1)[0])


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
