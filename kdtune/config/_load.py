"""``load_study(path)``: the only YAML reader.

A study file is data (a safe loader that also rejects duplicate keys). Every component is checked
against its registered function's signature, and every search-space entry by applying its extreme
values to the study and validating the result, so a typo, a wrong type or an impossible range fails
before anything trains, with one line naming the field and the fix.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from kdtune.config._validate import validate_study, with_overrides
from kdtune.data import check_files
from kdtune.errors import ConfigError
from kdtune.plugins import load_plugins
from kdtune.spec import CategoricalDist, StudyConfig, get_path


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _DuplicateKey(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_study(path: str | Path) -> StudyConfig:
    """Read the study at ``path``, import its plugins, validate it and return it; any problem raises
    ``ConfigError``."""
    path = Path(path)
    raw = _read_yaml(path)
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list):
        raise ConfigError(f"{path}: plugins: a list of module names, e.g. [my_project.kd_parts]; got {plugins!r}")
    load_plugins(plugins, source=f"{path}: plugins")  # they register components the study may name
    cfg = validate_study(raw, source=str(path))
    _check_search_space(cfg, source=str(path))
    check_files(cfg.dataset.name, cfg.dataset.params, source=str(path))  # here only: workers may not see them
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file; check the path (studies live in studies/*.yaml)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; pass a study file such as studies/smoke.yaml") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, _DuplicateKey):
            raise ConfigError(f"{path}: {problem}{where}; keep only one of them") from None
        if isinstance(err, yaml.constructor.ConstructorError):  # e.g. !!python/object, never constructed
            tag_error = f"unsupported YAML tag{where}: {problem}; study files are plain data"
            raise ConfigError(f"{path}: {tag_error}") from None
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}; fix the YAML there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file must be a YAML mapping (name:, teacher:, ...), got {type(raw).__name__}")
    return raw


def _check_search_space(cfg: StudyConfig, *, source: str) -> None:
    """Apply each search entry's extreme values to the study and validate: catches bad paths and ranges.

    A conditional entry is checked under each value of its conditions that makes it active.
    """
    raw = cfg.to_raw()
    for path, dist in cfg.search.space.items():
        conditions = _condition_cases(cfg, raw, path, source)
        candidates = dist.choices if isinstance(dist, CategoricalDist) else [dist.low, dist.high]
        for case, value in itertools.product(conditions, candidates):
            try:
                with_overrides(cfg, {**case, path: value})
            except ConfigError as err:
                detail = str(err).removeprefix("overrides: ")
                when = f" when {', '.join(f'{k}={v!r}' for k, v in case.items())}" if case else ""
                hint = _when_hint(cfg, path, case)
                raise ConfigError(
                    f"{source}: search.space.{path}: value {value!r}{when} does not fit the study ({detail}){hint}"
                ) from None


def _switches(cfg: StudyConfig, path: str) -> list[str]:
    """Searched component names (``x.name``) that ``path`` lies under, e.g. method.name for method.alpha."""
    return [n for n in cfg.search.space if n.endswith(".name") and path.startswith(n.removesuffix("name"))]


def _when_hint(cfg: StudyConfig, path: str, case: dict[str, Any]) -> str:
    implicit = [n for n in _switches(cfg, path) if n in case and n not in (cfg.search.space[path].when or {})]
    if not implicit:
        return ""
    return f"; add when: {{{implicit[0]}: [...]}} to {path} listing the {implicit[0].split('.')[0]}s it applies to"


def _condition_cases(cfg: StudyConfig, raw: dict[str, Any], path: str, source: str) -> list[dict[str, Any]]:
    """Every assignment of the searched paths in ``path``'s ``when`` that activates it."""
    when = dict(cfg.search.space[path].when or {})
    for name in _switches(cfg, path):  # a parameter of a searched component must hold for each choice
        when.setdefault(name, cfg.search.space[name].choices)  # type: ignore[union-attr]
    searched = {c: allowed for c, allowed in when.items() if c in cfg.search.space}
    for cond, allowed in when.items():
        if cond not in searched and get_path(raw, cond) not in allowed:
            raise ConfigError(
                f"{source}: search.space.{path}: never sampled, because {cond} is {get_path(raw, cond)!r} "
                f"in the study, not one of {allowed}; fix the 'when' or search {cond}"
            )
    return [dict(zip(searched, combo)) for combo in itertools.product(*searched.values())]
