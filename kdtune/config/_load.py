"""``load_study(path)``: the only YAML reader.

A study file is data (a safe loader that also rejects duplicate keys). Every component is checked
against its registered function's signature, and every search-space entry by applying its extreme
values to the study and validating the result, so a typo, a wrong type or an impossible range fails
before anything trains, with one line naming the field and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdtune.config._search import CategoricalDist
from kdtune.config._study import StudyConfig, _validate
from kdtune.errors import ConfigError


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
    """Read, validate and return the study at ``path``; any problem raises ``ConfigError``."""
    path = Path(path)
    raw = _read_yaml(path)
    cfg = _validate(raw, source=str(path))
    _check_search_space(cfg, source=str(path))
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
    """Apply each search entry's extreme values to the study and validate: catches bad paths and ranges."""
    for path, dist in cfg.search.space.items():
        candidates = dist.choices if isinstance(dist, CategoricalDist) else [dist.low, dist.high]
        for value in candidates:
            try:
                cfg.with_overrides({path: value})
            except ConfigError as err:
                detail = str(err).removeprefix("overrides: ")
                raise ConfigError(
                    f"{source}: search.space.{path}: value {value!r} does not fit the study ({detail})"
                ) from None
