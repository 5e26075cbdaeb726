"""Where a study writes, for a run that is not on this machine: ``with_root`` and ``relative_locations``.

A study submitted as a Ray job runs from a temporary copy of the project on the head node, and its trials
on any node: a relative output location would be written inside that copy and vanish with it. Every output
location must then be an absolute path (on storage every node mounts) or a database / MLflow-server URL.
"""

from __future__ import annotations

from pathlib import Path

from kdtune.config._validate import with_overrides
from kdtune.errors import ConfigError
from kdtune.spec import StudyConfig
from kdtune.urls import sqlite_path


def with_root(cfg: StudyConfig, root: str) -> StudyConfig:
    """``cfg`` with every output location under ``root/<study name>``: reports, Ray's storage, the Optuna
    and MLflow SQLite stores (MLflow's artifacts beside them) and the cache. ``root`` must be absolute."""
    base = Path(root).expanduser()
    if not base.is_absolute():
        raise ConfigError(f"--root {root}: give an absolute path on storage the driver and every node mount "
                          "(e.g. /mnt/shared/kdtune)")
    base = base / cfg.name
    return with_overrides(cfg, {
        "output.reports": str(base / "reports"), "output.ray": str(base / "ray"), "output.cache": str(base / "cache"),
        "output.optuna": f"sqlite:///{base / 'optuna.db'}", "tracking.uri": f"sqlite:///{base / 'mlflow.db'}",
        "tracking.artifacts": None,
    })


def _relative_path(value: str | None) -> bool:
    return value is not None and not Path(value).expanduser().is_absolute()


def _relative_url(url: str | None) -> bool:
    """No URL (the default: a SQLite file in the working directory), or a SQLite file given relative."""
    if url is None:
        return True
    path = sqlite_path(url)
    return path is not None and not path.is_absolute()


def relative_locations(cfg: StudyConfig) -> list[str]:
    """The output settings of ``cfg`` that resolve against the working directory: ``field ('value')``."""
    out = cfg.output
    found = [f"output.{key} ({getattr(out, key)!r})" for key in ("reports", "ray") if _relative_path(getattr(out, key))]
    if _relative_url(out.optuna):
        found.append(f"output.optuna ({out.optuna or 'default .kdtune/optuna.db'!r})")
    if _relative_url(cfg.tracking.uri):
        found.append(f"tracking.uri ({cfg.tracking.uri or 'default mlflow.db'!r})")
    if _relative_path(out.cache):
        found.append(f"output.cache ({out.cache!r})")
    uri = cfg.tracking.uri or ""
    if cfg.tracking.artifacts is None and not uri.startswith(("sqlite:", "http://", "https://", "databricks")) and uri:
        found.append("tracking.artifacts (default mlartifacts)")  # a database store keeps its artifacts in the cwd
    elif _relative_path(cfg.tracking.artifacts):
        found.append(f"tracking.artifacts ({cfg.tracking.artifacts!r})")
    return found
