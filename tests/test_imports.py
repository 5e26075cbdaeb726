"""The package's import structure: no cycles (imports inside functions included), the spec layer at the
bottom, and no global state changed by importing kdtune."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.fresh_python import fresh_python

PACKAGE = Path(__file__).resolve().parents[1] / "kdtune"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The kdtune modules ``name`` imports anywhere in its source: at the top, inside functions, under
    TYPE_CHECKING. ``from package import name`` counts as importing the submodule when ``name`` is one."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_finds_a_cycle_and_imports_inside_functions():
    source = ast.parse("def f():\n    from kdtune import metrics\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(source))  # ast.walk reaches function bodies
    assert "kdtune.metrics" in GRAPH["kdtune.study.stages.masking"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_anywhere_in_kdtune():
    assert _cycles(GRAPH) == []


def test_the_spec_layer_imports_nothing_else_of_kdtune():
    spec = [m for m in GRAPH if m == "kdtune.spec" or m.startswith("kdtune.spec.")]
    assert spec
    outside = {m: sorted(d for d in GRAPH[m] if not d.startswith("kdtune.spec")) for m in spec}
    assert {m: d for m, d in outside.items() if d} == {}


@pytest.mark.parametrize("component", ["attacks", "data", "losses", "methods", "models", "penalties", "evaluate",
                                       "train", "teacher", "robustness", "student"])
def test_components_depend_on_the_spec_layer_not_on_config(component):
    """Components take typed specs; validating them against the registries sits above (kdtune.config)."""
    name = f"kdtune.{component}"
    reach, todo = set(), [name]
    while todo:
        for dep in GRAPH[todo.pop()] - reach:
            reach.add(dep)
            todo.append(dep)
    assert not any(m == "kdtune.config" or m.startswith("kdtune.config.") for m in reach)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_importing_kdtune_changes_no_environment_variable_and_no_logger():
    lines = fresh_python("""
        import logging, os, pkgutil, importlib, warnings
        # what the libraries themselves do on import (ray sets RAY_CLIENT_MODE, for one) is not kdtune's
        import mlflow, optuna, pandas, ray, ray.tune, torch, torchvision
        import kdtune
        env = dict(os.environ)
        filters = {n: list(l.filters) for n, l in logging.root.manager.loggerDict.items() if hasattr(l, "filters")}
        warning_filters = list(warnings.filters)
        for info in pkgutil.walk_packages(kdtune.__path__, "kdtune."):
            if not info.name.endswith(".__main__"):
                importlib.import_module(info.name)
        print({k: v for k, v in os.environ.items() if env.get(k) != v})
        after = {n: list(l.filters) for n, l in logging.root.manager.loggerDict.items() if hasattr(l, "filters")}
        print(sorted(n for n in after if after[n] and after[n] != filters.get(n, [])))
        print(warnings.filters[: len(warnings.filters) - len(warning_filters)])
        print(optuna.logging.get_verbosity() == optuna.logging.INFO)
    """)
    assert lines == ["{}", "[]", "[]", "True"]


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_the_clis_setup_is_what_sets_tunes_environment():
    lines = fresh_python("""
        import os
        from kdtune import compat
        for name in compat.TUNE_ENVIRONMENT:  # as a user's shell has them (this test's process may have run setup)
            os.environ.pop(name, None)
        import kdtune.study, kdtune.sweep, kdtune.cli
        before = {k: os.environ.get(k) for k in compat.TUNE_ENVIRONMENT}
        compat.setup()
        compat.setup()  # idempotent
        print(before == {k: None for k in compat.TUNE_ENVIRONMENT})
        print(all(os.environ[k] == v for k, v in compat.TUNE_ENVIRONMENT.items()))
        import logging
        print([sum(isinstance(f, compat.BenignSyncRace) for f in logging.getLogger(n).filters)
               for n in compat.SYNC_LOGGERS])
    """)
    assert lines == ["True", "True", "[1, 1]"]
